# Project grid (CRS, pixel size, aligned bounds) and the 10 km processing tiles.


rule grid:
    input:
        aoi=config["aoi"],
    output:
        grid="results/grid/grid.json",
        tiles="results/grid/tiles.gpkg",
    params:
        crs=config["crs"],
        resolution=config["resolution"],
        tile_size=config["grid"]["tile_size"],
    log:
        "logs/grid/grid.log",
    localrule: True
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow grid --aoi {input.aoi} --crs {params.crs} --resolution {params.resolution}"
        " --tile-size {params.tile_size} --out-grid {output.grid} --out-tiles {output.tiles} > {log} 2>&1"

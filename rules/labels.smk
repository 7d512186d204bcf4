# Labels: parcels cleaned and mapped through the legend, grid-based train/val/test partition, and each tile's
# class, parcel-id and cropland rasters (one job per block of grid.block_tiles x grid.block_tiles tiles).


rule labels_clean:
    input:
        parcels=config["inputs"]["parcels"],
        aoi=config["aoi"],
        grid="results/grid/grid.json",
        legend=config["legend"],
    output:
        parcels="results/labels/clean.gpkg",
        dropped="results/labels/dropped.csv",
    params:
        field=config["inputs"]["label_field"],
        min_pixels=config["partition"]["min_pixels"],
    log:
        "logs/labels_clean/labels_clean.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow labels --parcels {input.parcels} --label-field {params.field} --aoi {input.aoi}"
        " --grid {input.grid} --legend {input.legend} --min-pixels {params.min_pixels}"
        " --out {output.parcels} --out-dropped {output.dropped} > {log} 2>&1"


rule partition:
    input:
        parcels="results/labels/clean.gpkg",
        dropped="results/labels/dropped.csv",
        raw=config["inputs"]["parcels"],
        legend=config["legend"],
    output:
        parcels="results/labels/parcels.gpkg",
        report=report(
            "results/partition/split_report.csv",
            caption="../report/split.rst",
            category="Partition",
        ),
        plot=report(
            "results/partition/split_report.png",
            caption="../report/split.rst",
            category="Partition",
        ),
        summary="results/partition/split_report.json",
    params:
        cell_size=config["partition"]["cell_size"],
        fractions=as_json(config["partition"]["fractions"]),
        candidates=config["partition"]["candidates"],
        subsample=config["partition"]["subsample"],
        seed=config["seed"],
    log:
        "logs/partition/partition.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow partition --parcels {input.parcels} --dropped {input.dropped}"
        " --input-parcels {input.raw} --legend {input.legend}"
        " --cell-size {params.cell_size} --fractions {params.fractions} --candidates {params.candidates}"
        " --subsample {params.subsample} --seed {params.seed} --out {output.parcels}"
        " --out-report {output.report} --out-plot {output.plot} > {log} 2>&1"


rule labels_tile:
    input:
        parcels="results/labels/clean.gpkg",
        grid="results/grid/grid.json",
        tiles="results/grid/tiles.gpkg",
        legend=config["legend"],
    output:
        directory("results/labels/tiles/{block}"),
    params:
        tiles=lambda wildcards: PLAN.blocks[wildcards.block],
        mask=config["inputs"]["cropland_mask"] or "none",
    resources:
        runtime=30 * config["grid"]["block_tiles"] ** 2,
    log:
        "logs/labels_tile/{block}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow labels-tile --parcels {input.parcels} --grid {input.grid} --tiles {input.tiles}"
        " --tile {params.tiles} --legend {input.legend} --cropland-mask {params.mask} --out {output} > {log} 2>&1"

# Feature cube per tile: the products whose footprint overlaps the tile, on the cube's time axis.


rule stack:
    input:
        unpack(get_stack_inputs),
        tiles="results/grid/tiles.gpkg",
    output:
        directory("results/cubes/{tile}.zarr"),
    params:
        bands=as_json(get_stack_bands()),
        dates=lambda wildcards: as_json(PLAN.target_dates),
        mode=config["stack"]["mode"],
        gapfill=config["stack"]["gapfill"],
        knn_k=config["stack"]["knn_k"],
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/stack/{tile}.log",
    benchmark:
        "benchmarks/stack/{tile}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow stack --tile {wildcards.tile} --grid {input.grid} --tiles {input.tiles}"
        " --s1 {input.s1} --coh {input.coh} --s2 {input.s2} --bands {params.bands} --dates {params.dates}"
        " --mode {params.mode} --gapfill {params.gapfill} --knn-k {params.knn_k} --out {output} > {log} 2>&1"

# Feature cubes, one job per block of grid.block_tiles x grid.block_tiles tiles (a block of 1 tile by default):
# each tile's cube from the products whose footprint overlaps that tile, on the cube's time axis.


rule stack:
    input:
        unpack(get_stack_inputs),
        tiles="results/grid/tiles.gpkg",
    output:
        directory("results/cubes/{block}"),
    params:
        inputs=get_stack_selection,
        bands=as_json(get_stack_bands()),
        dates=lambda wildcards: as_json(PLAN.target_dates),
        mode=config["stack"]["mode"],
        gapfill=config["stack"]["gapfill"],
        knn_k=config["stack"]["knn_k"],
    resources:
        mem_mb=4000,
        runtime=60 * config["grid"]["block_tiles"] ** 2,
    log:
        "logs/stack/{block}.log",
    benchmark:
        "benchmarks/stack/{block}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow stack --inputs {params.inputs} --grid {input.grid} --tiles {input.tiles}"
        " --bands {params.bands} --dates {params.dates}"
        " --mode {params.mode} --gapfill {params.gapfill} --knn-k {params.knn_k} --out {output} > {log} 2>&1"

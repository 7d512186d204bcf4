# Samples: labelled pixel series (and optional patches, read across tile edges from the neighbouring tiles'
# cubes as inference reads them) per tile and split, one job per block of grid.block_tiles x grid.block_tiles
# tiles, merged per split.


rule samples_tile:
    input:
        unpack(get_samples_inputs),
        grid="results/grid/grid.json",
        parcels="results/labels/parcels.gpkg",
        tiles="results/grid/tiles.gpkg",
        legend=config["legend"],
        bands=config["samples"]["bands"] or [],
    output:
        directory("results/samples/tiles/{block}"),
    params:
        inputs=get_samples_selection,
        per_parcel=config["samples"]["pixels_per_parcel"],
        patch=config["samples"]["patch_size"] if config["samples"]["patches"] else 0,
        seed=config["seed"],
    resources:
        runtime=30 * config["grid"]["block_tiles"] ** 2,
    log:
        "logs/samples_tile/{block}.log",
    benchmark:
        "benchmarks/samples_tile/{block}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow samples-tile --inputs {params.inputs} --grid {input.grid}"
        " --parcels {input.parcels} --tiles {input.tiles} --legend {input.legend}"
        " --pixels-per-parcel {params.per_parcel} --patch-size {params.patch} --seed {params.seed}"
        " --bands '{input.bands}' --out {output} > {log} 2>&1"


rule samples_merge:
    input:
        expand("results/samples/tiles/{block}", block=BLOCKS),
    output:
        directory("results/samples/{split}.zarr"),
    params:
        stores=lambda wildcards: tile_samples_stores(wildcards.split),
    log:
        "logs/samples_merge/{split}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow samples-merge --inputs {params.stores} --out {output} > {log} 2>&1"

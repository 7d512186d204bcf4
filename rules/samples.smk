# Samples: labelled pixel series (and optional patches, read across tile edges from the neighbouring tiles'
# cubes as inference reads them) per tile and split, merged per split.


rule samples_tile:
    input:
        unpack(get_samples_inputs),
        grid="results/grid/grid.json",
        classes="results/labels/{tile}_class.tif",
        parcel_ids="results/labels/{tile}_parcel.tif",
        parcels="results/labels/parcels.gpkg",
        tiles="results/grid/tiles.gpkg",
        legend=config["legend"],
        bands=config["samples"]["bands"] or [],
    output:
        train=directory("results/samples/tiles/{tile}/train.zarr"),
        val=directory("results/samples/tiles/{tile}/val.zarr"),
        test=directory("results/samples/tiles/{tile}/test.zarr"),
    params:
        cubes=get_samples_cube_args,
        per_parcel=config["samples"]["pixels_per_parcel"],
        patch=config["samples"]["patch_size"] if config["samples"]["patches"] else 0,
        seed=config["seed"],
    log:
        "logs/samples_tile/{tile}.log",
    benchmark:
        "benchmarks/samples_tile/{tile}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow samples-tile {params.cubes} --grid {input.grid}"
        " --classes {input.classes}"
        " --parcel-ids {input.parcel_ids} --parcels {input.parcels} --tiles {input.tiles}"
        " --tile {wildcards.tile} --legend {input.legend} --pixels-per-parcel {params.per_parcel}"
        " --patch-size {params.patch} --seed {params.seed} --bands '{input.bands}'"
        " --out-train {output.train} --out-val {output.val} --out-test {output.test} > {log} 2>&1"


rule samples_merge:
    input:
        expand("results/samples/tiles/{tile}/{{split}}.zarr", tile=TILES),
    output:
        directory("results/samples/{split}.zarr"),
    log:
        "logs/samples_merge/{split}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow samples-merge --inputs {input} --out {output} > {log} 2>&1"

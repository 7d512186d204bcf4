# Tiled inference (per model and tile, windowed; patch models read a halo from the neighbouring tiles' cubes),
# then the county mosaic with post-processing.


rule infer:
    input:
        unpack(get_infer_inputs),
        model="results/models/{model}",
        legend=config["legend"],
        grid="results/grid/grid.json",
    output:
        classes="results/maps/{model}/{tile}_class.tif",
        uncertainty="results/maps/{model}/{tile}_uncertainty.tif",
    params:
        cubes=get_infer_cube_args,
        window=config["inference"]["window_rows"],
        batch=config["inference"]["batch_size"],
        proba=lambda wildcards: (
            f"--out-proba results/maps/{wildcards.model}/{wildcards.tile}_proba.tif"
            if config["inference"]["probabilities"]
            else ""
        ),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/infer/{model}/{tile}.log",
    benchmark:
        "benchmarks/infer/{model}/{tile}.tsv"
    conda:
        "../envs/ml.yaml"
    shell:
        "python -m cropflow infer {params.cubes} --grid {input.grid}"
        " --model-dir {input.model} --legend {input.legend}"
        " --window-rows {params.window} --batch-size {params.batch} --threads {threads}"
        " --out-class {output.classes} --out-uncertainty {output.uncertainty} {params.proba} > {log} 2>&1"


rule mosaic:
    input:
        maps=expand("results/maps/{{model}}/{tile}_class.tif", tile=TILES),
        labels=label_blocks(),
        grid="results/grid/grid.json",
        legend=config["legend"],
    output:
        "results/maps/{model}/mosaic.tif",
    params:
        cropland=[tile_labels(tile, "cropland") for tile in TILES],
        majority="--majority" if config["postprocess"]["majority_filter"] else "",
        mask="--mask-cropland" if config["postprocess"]["cropland_mask"] else "",
    log:
        "logs/mosaic/{model}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow mosaic --maps {input.maps} --cropland {params.cropland} --grid {input.grid}"
        " --legend {input.legend} {params.majority} {params.mask} --out {output} > {log} 2>&1"


rule mosaic_uncertainty:
    input:
        layers=expand("results/maps/{{model}}/{tile}_uncertainty.tif", tile=TILES),
        mosaic="results/maps/{model}/mosaic.tif",
        grid="results/grid/grid.json",
    output:
        "results/maps/{model}/mosaic_uncertainty.tif",
    log:
        "logs/mosaic_uncertainty/{model}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow mosaic-uncertainty --layers {input.layers} --class-mosaic {input.mosaic}"
        " --grid {input.grid} --out {output} > {log} 2>&1"

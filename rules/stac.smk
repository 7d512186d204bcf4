# STAC catalog of the maps: a collection per mapped model, an item per tile and one for the county mosaic.


rule stac:
    input:
        unpack(get_stac_inputs),
        legend=config["legend"],
    output:
        directory("results/stac"),
    params:
        maps="results/maps",
        models=MAPPED_MODELS,
        tiles=TILES,
        cubes=[tile_cube(tile) for tile in TILES],
        config=as_json(config),
        proba="--probabilities" if config["inference"]["probabilities"] else "",
    log:
        "logs/stac/stac.log",
    localrule: True
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow stac --maps {params.maps} --models {params.models} --tiles {params.tiles}"
        " --cubes {params.cubes} --legend {input.legend} --config {params.config} {params.proba}"
        " --out {output} > {log} 2>&1"

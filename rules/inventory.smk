# Inventory: the tables of discovered products, S2 same-date layers, S1 acquisitions and pairs, every product
# left out before any job (with the reason) and the share of each tile each S1 product covers (the report and
# the archive). The same scan (through the cache, cropflow.plan.inventories) decides the DAG in common.smk.


rule inventory:
    input:
        aoi=config["aoi"],
        tiles="results/grid/tiles.gpkg",
    output:
        s1="results/inventory/s1_scenes.csv",
        pairs="results/inventory/s1_pairs.csv",
        s1_skipped="results/inventory/s1_skipped.csv",
        s1_coverage="results/inventory/s1_coverage.csv",
        s2="results/inventory/s2_scenes.csv",
        s2_layers="results/inventory/s2_layers_planned.csv",
        s1_acquisitions="results/inventory/s1_acquisitions.csv",
        skipped="results/inventory/skipped.csv",
    params:
        s1=config["inputs"]["s1"],
        s2=config["inputs"]["s2"],
        cache=config["inputs"]["cache"],
        s1_settings=as_json({"engine": config["s1"]["engine"], "pairs": config["s1"]["pairs"]}),
        s2_settings=as_json({"prefer": config["s2"]["prefer"], "clouds": {"method": config["s2"]["clouds"]["method"]}}),
        start=config["season"]["start"],
        end=config["season"]["end"],
        resolution=config["resolution"],
        products=sorted(PLAN.s1_scenes["scene"]) + sorted(PLAN.s2_scenes["scene"]) + sorted(PLAN.skipped["scene"]),
    log:
        "logs/inventory/inventory.log",
    localrule: True
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow inventory --s1 {params.s1} --s2 {params.s2} --cache {params.cache}"
        " --aoi {input.aoi} --tiles {input.tiles} --out-s1-coverage {output.s1_coverage}"
        " --s1-settings {params.s1_settings} --s2-settings {params.s2_settings}"
        " --season {params.start} {params.end} --out-s1 {output.s1}"
        " --out-pairs {output.pairs} --out-s1-skipped {output.s1_skipped} --out-s2 {output.s2}"
        " --resolution {params.resolution} --out-s2-layers {output.s2_layers}"
        " --out-s1-acquisitions {output.s1_acquisitions} --out-skipped {output.skipped} > {log} 2>&1"

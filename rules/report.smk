# Report figures: temporal profiles per class from the train split, quicklooks of each mosaic and its uncertainty.


rule profiles:
    input:
        train="results/samples/train.zarr",
        legend=config["legend"],
    output:
        report(
            "results/report/profiles.png",
            caption="../report/profiles.rst",
            category="Temporal profiles",
        ),
    log:
        "logs/profiles/profiles.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow profiles --train {input.train} --legend {input.legend} --out {output} > {log} 2>&1"


rule quicklook:
    input:
        mosaic="results/maps/{model}/mosaic.tif",
        legend=config["legend"],
    output:
        report(
            "results/maps/{model}/quicklook.png",
            caption="../report/quicklook.rst",
            category="Maps",
            labels={"model": "{model}"},
        ),
    log:
        "logs/quicklook/{model}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow quicklook --mosaic {input.mosaic} --legend {input.legend} --out {output} > {log} 2>&1"


rule uncertainty_quicklook:
    input:
        "results/maps/{model}/mosaic_uncertainty.tif",
    output:
        report(
            "results/maps/{model}/uncertainty.png",
            caption="../report/uncertainty.rst",
            category="Map uncertainty",
            labels={"model": "{model}"},
        ),
    log:
        "logs/uncertainty_quicklook/{model}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow uncertainty-quicklook --uncertainty {input} --out {output} > {log} 2>&1"


rule s2_selection:
    input:
        expand("results/s2/{scene}.json", scene=PLAN.s2_scenes["scene"]),
    output:
        report(
            "results/inventory/s2_selection.csv",
            caption="../report/s2_selection.rst",
            category="Inventory",
        ),
    log:
        "logs/s2_selection/s2_selection.log",
    localrule: True
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s2-selection --inputs {input} --out {output} > {log} 2>&1"


rule inventory_report:
    input:
        s2="results/inventory/s2_scenes.csv",
        s1="results/inventory/s1_scenes.csv",
        s1_acquisitions="results/inventory/s1_acquisitions.csv",
        skipped="results/inventory/skipped.csv",
        planned="results/inventory/s2_layers_planned.csv",
        layers=expand("results/s2/layers/{layer}.json", layer=PLAN.s2_layers["layer"]),
    output:
        report=report(
            "results/inventory/report.csv",
            caption="../report/inventory.rst",
            category="Inventory",
        ),
        layers=report(
            "results/inventory/s2_layers.csv",
            caption="../report/s2_layers.rst",
            category="Inventory",
        ),
    log:
        "logs/inventory_report/inventory_report.log",
    localrule: True
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow inventory-report --s2 {input.s2} --s1 {input.s1}"
        " --s1-acquisitions {input.s1_acquisitions} --skipped {input.skipped}"
        " --s2-layers-planned {input.planned} --layers {input.layers} --out {output.report}"
        " --out-layers {output.layers} > {log} 2>&1"

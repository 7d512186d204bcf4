# Report figures: temporal profiles per class from the train split, and a quicklook of each mosaic.


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

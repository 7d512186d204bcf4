# Training (per model) on the train split with early stopping on the validation split, and evaluation on
# the test split.


rule train:
    input:
        train="results/samples/train.zarr",
        val="results/samples/val.zarr",
    output:
        directory("results/models/{model}"),
    params:
        hyper=lambda wildcards: as_json(get_model_params(wildcards)),
        seed=config["seed"],
    threads: 8
    resources:
        mem_mb=8000,
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/train/{model}.tsv"
    conda:
        "../envs/ml.yaml"
    shell:
        "python -m cropflow train --model {wildcards.model} --train {input.train} --val {input.val}"
        " --params {params.hyper} --seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        model="results/models/{model}",
        test="results/samples/test.zarr",
    output:
        metrics=report(
            "results/metrics/{model}.json",
            caption="../report/metrics.rst",
            category="Metrics",
            labels={"model": "{model}", "figure": "metrics"},
        ),
        confusion=report(
            "results/metrics/{model}_confusion.png",
            caption="../report/confusion.rst",
            category="Metrics",
            labels={"model": "{model}", "figure": "confusion matrix"},
        ),
    log:
        "logs/evaluate/{model}.log",
    conda:
        "../envs/ml.yaml"
    shell:
        "python -m cropflow evaluate --model-dir {input.model} --test {input.test}"
        " --out-json {output.metrics} --out-png {output.confusion} > {log} 2>&1"

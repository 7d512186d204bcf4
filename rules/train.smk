# Training (per model) on the train split with early stopping on the validation split, evaluation on the
# test split, the comparison table, and the optional experiments: decision fusion, in-season windows and
# transfer learning (fusion, inseason, transfer in the config).


ruleorder: finetune > train


rule train:
    input:
        train=get_training_samples("train"),
        val=get_training_samples("val"),
    output:
        directory("results/models/{model}"),
    params:
        hyper=lambda wildcards: as_json(get_model_params(wildcards)),
        seed=config["seed"],
        in_memory=config["training"]["in_memory_max_mb"],
    threads: 8
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=get_train_gpus,
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/train/{model}.tsv"
    conda:
        TRAIN_ENV
    shell:
        "python -m cropflow train --model {wildcards.model} --train {input.train} --val {input.val}"
        " --params {params.hyper} --seed {params.seed} --threads {threads}"
        " --backup-dir .cropflow/training/{wildcards.model} --in-memory-max-mb {params.in_memory}"
        " --out {output} > {log} 2>&1"


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


rule compare:
    input:
        get_compared_metrics,
    output:
        table=report(
            "results/metrics/comparison.csv",
            caption="../report/comparison.rst",
            category="Metrics",
            labels={"model": "all", "figure": "comparison table"},
        ),
        figure=report(
            "results/metrics/comparison.png",
            caption="../report/comparison.rst",
            category="Metrics",
            labels={"model": "all", "figure": "comparison"},
        ),
    log:
        "logs/compare/compare.log",
    localrule: True
    conda:
        "../envs/ml.yaml"
    shell:
        "python -m cropflow compare --metrics {input} --out-csv {output.table} --out-png {output.figure} > {log} 2>&1"


rule fuse:
    input:
        members=expand("results/models/{model}", model=config["fusion"]["members"]),
        fallback=f"results/models/{config['fusion']['fallback']}",
        val="results/samples/val.zarr",
        test="results/samples/test.zarr",
    output:
        metrics=report(
            "results/metrics/fusion.json",
            caption="../report/fusion.rst",
            category="Metrics",
            labels={"model": "fusion", "figure": "metrics"},
        ),
        confusion=report(
            "results/metrics/fusion_confusion.png",
            caption="../report/fusion.rst",
            category="Metrics",
            labels={"model": "fusion", "figure": "confusion matrix"},
        ),
    params:
        alphas=lambda wildcards: " ".join(str(config["fusion"]["alphas"][k]) for k in ("start", "stop", "step")),
    log:
        "logs/fuse/fuse.log",
    conda:
        "../envs/ml.yaml"
    shell:
        "python -m cropflow fuse --members {input.members} --fallback {input.fallback} --val {input.val}"
        " --test {input.test} --alphas {params.alphas} --out-json {output.metrics}"
        " --out-png {output.confusion} > {log} 2>&1"


rule inseason:
    input:
        train="results/samples/train.zarr",
        val="results/samples/val.zarr",
        test="results/samples/test.zarr",
    output:
        table=report(
            "results/inseason/{model}.csv",
            caption="../report/inseason.rst",
            category="In-season",
            labels={"model": "{model}", "figure": "table"},
        ),
        figure=report(
            "results/inseason/{model}.png",
            caption="../report/inseason.rst",
            category="In-season",
            labels={"model": "{model}", "figure": "accuracy by window"},
        ),
    params:
        hyper=lambda wildcards: as_json(get_model_params(wildcards)),
        ends=" ".join(config["inseason"]["ends"]),
        seed=config["seed"],
    threads: 8
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=get_train_gpus,
    log:
        "logs/inseason/{model}.log",
    conda:
        TRAIN_ENV
    shell:
        "python -m cropflow inseason --model {wildcards.model} --train {input.train} --val {input.val}"
        " --test {input.test} --ends {params.ends} --params {params.hyper} --seed {params.seed}"
        " --threads {threads} --out-csv {output.table} --out-png {output.figure} > {log} 2>&1"


rule finetune:
    input:
        pretrained=config["transfer"]["pretrained"] or "transfer.pretrained-is-not-set",
        train=get_training_samples("train"),
        val=get_training_samples("val"),
    output:
        directory("results/models/{model}_finetuned"),
    params:
        hyper=as_json({k: v for k, v in config["transfer"].items() if k not in ("enabled", "pretrained")}),
        seed=config["seed"],
    threads: 8
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=config["training"]["gpus"],
    log:
        "logs/finetune/{model}.log",
    conda:
        TRAIN_ENV
    shell:
        "python -m cropflow finetune --pretrained {input.pretrained} --train {input.train} --val {input.val}"
        " --params {params.hyper} --seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


rule select:
    input:
        "results/samples/train.zarr",
    output:
        bands="results/selection/bands.json",
        relevance="results/selection/relevance.csv",
        figure=report(
            "results/selection/correlation.png",
            caption="../report/selection.rst",
            category="Feature selection",
            labels={"figure": "band correlation"},
        ),
    params:
        threshold=config["selection"]["threshold"],
        max_iter=config["selection"]["max_iter"],
        seed=config["seed"],
    log:
        "logs/select/select.log",
    conda:
        "../envs/ml.yaml"
    shell:
        "python -m cropflow select --train {input} --threshold {params.threshold} --max-iter {params.max_iter}"
        " --seed {params.seed} --out-json {output.bands} --out-csv {output.relevance} --out-png {output.figure}"
        " > {log} 2>&1"


rule interpret:
    input:
        model="results/models/{model}",
        test="results/samples/test.zarr",
    output:
        report(
            directory("results/interpret/{model}"),
            patterns=["{figure}.png"],
            caption="../report/interpret.rst",
            category="Interpretation",
            labels={"model": "{model}", "figure": "{figure}"},
        ),
    params:
        max_samples=config["interpret"]["max_samples"],
        seed=config["seed"],
    log:
        "logs/interpret/{model}.log",
    conda:
        "../envs/ml.yaml"
    shell:
        "python -m cropflow interpret --model-dir {input.model} --samples {input.test}"
        " --max-samples {params.max_samples} --seed {params.seed} --out {output} > {log} 2>&1"

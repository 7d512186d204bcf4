# Reproducibility archive, built only when asked for (`snakemake archive`): the finished run's code at its
# commit, resolved config, environment, input checksums, split, models, metrics, SNAP graphs and report (when
# `snakemake --report results/report.html` was run before) with RO-Crate metadata and a sha256 manifest.
# Raw inputs are not packed; their sha256 are (`python -m cropflow archive-verify --inputs` checks a re-run's).


rule archive:
    input:
        unpack(get_archive_inputs),
    output:
        "results/archive/cropflow-archive.tar.gz",
    params:
        code=workflow.basedir,
        config=as_json(config),
        models=get_archived_models(),
        results=get_archived_results(),
    log:
        "logs/archive/archive.log",
    localrule: True
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow archive --code {params.code} --config {params.config} --inventory {input.inventory}"
        " --models {params.models} --results {params.results} --out {output}"
        " > {log} 2>&1"

# Reproducibility archive, built only when asked for (`snakemake archive`): the run's code at its commit,
# resolved config, environment, input checksums, split, models, metrics, SNAP graphs and report (when
# `snakemake --report results/report.html` was run before) with RO-Crate metadata and a sha256 manifest.
# It depends on exactly what it packs (get_archive_inputs), not on the maps.
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
    log:
        "logs/archive/archive.log",
    localrule: True
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow archive --code {params.code} --config {params.config} --inventory {input.inventory}"
        " --parcels {input.parcels} --models {params.models} --results {input.results} --out {output}"
        " > {log} 2>&1"

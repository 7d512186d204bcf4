# Error-adjusted class areas with 95 % confidence intervals per mapped model (Olofsson et al. 2014), for the
# whole map and, with areas.boundaries, per administrative unit.


rule areas:
    input:
        metrics="results/metrics/{model}.json",
        mosaic="results/maps/{model}/mosaic.tif",
        boundaries=get_area_boundaries,
    output:
        report(
            "results/areas/{model}.csv",
            caption="../report/areas.rst",
            category="Areas",
            labels={"model": "{model}", "table": "areas"},
        ),
    params:
        units=area_unit_args(),
    log:
        "logs/areas/{model}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow areas --metrics {input.metrics} --map {input.mosaic} {params.units}"
        " --out {output} > {log} 2>&1"

# Change maps of the pairs of class maps in compare_maps (two models, or a model and another year's map).


rule change_map:
    input:
        unpack(get_change_inputs),
        grid="results/grid/grid.json",
        legend=config["legend"],
    output:
        change="results/changes/{change}.tif",
        transitions=report(
            "results/changes/{change}_transitions.csv",
            caption="../report/changes.rst",
            category="Map comparison",
            labels={"comparison": "{change}"},
        ),
        summary="results/changes/{change}.json",
    params:
        labels=change_labels,
    wildcard_constraints:
        change="|".join(re.escape(name) for name in MAP_COMPARISONS) or "no-comparison-configured",
    log:
        "logs/change_map/{change}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow change-map --a {input.a} --b {input.b} --grid {input.grid} --legend {input.legend}"
        " --labels {params.labels} --out {output.change} --out-csv {output.transitions}"
        " --out-json {output.summary} > {log} 2>&1"

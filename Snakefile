# cropflow: Sentinel-1 + Sentinel-2 + labelled parcels -> county-scale crop-type maps.
# Every rule only wires files to a `cropflow <stage>` command; the computations live in workflow/cropflow.

from snakemake.utils import min_version

min_version("9.27")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/inventory.smk"
include: "rules/grid.smk"
include: "rules/s1.smk"
include: "rules/s2.smk"
include: "rules/labels.smk"
include: "rules/stack.smk"
include: "rules/samples.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/stac.smk"
include: "rules/report.smk"
include: "rules/areas.smk"
include: "rules/changes.smk"
include: "rules/archive.smk"


check_conda_envs()


rule all:
    default_target: True
    input:
        get_final_outputs(),

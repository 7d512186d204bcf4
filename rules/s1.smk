# Sentinel-1: per-scene C2 and per-pair coherence at the S1 seam on the project grid, from SLC products with
# the native or the SNAP engine, or validated from preprocessed seam products; then the per-scene
# polarimetric features computed by cropflow from C2 (identical for every engine), per acquisition: the
# slices of one pass are first assembled into one C2 on the grid (s1.mosaic.overlap).

if config["s1"]["engine"] == "preprocessed":

    include: "s1_preprocessed.smk"

else:

    include: "s1_slc.smk"


rule s1_assemble:
    input:
        slices=get_s1_acq_slices,
        grid="results/grid/grid.json",
    output:
        "results/s1/acquisitions/{acq}_C2.tif",
    params:
        overlap=config["s1"]["mosaic"]["overlap"],
    log:
        "logs/s1_assemble/{acq}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s1-assemble --acq {wildcards.acq} --slices {input.slices} --grid {input.grid}"
        " --overlap {params.overlap} --out {output} > {log} 2>&1"


rule s1_features:
    input:
        get_acq_c2,
    output:
        "results/s1/features/{acq}.tif",
    params:
        features=config["s1"]["features"],
        glcm=as_json(config["s1"]["glcm"]),
    log:
        "logs/s1_features/{acq}.log",
    benchmark:
        "benchmarks/s1_features/{acq}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s1-features --c2 {input} --features {params.features} --glcm {params.glcm}"
        " --out {output} > {log} 2>&1"

# Sentinel-1: per-scene C2 and per-pair coherence at the S1 seam on the project grid, from SLC products with
# the native or the SNAP engine, or validated from preprocessed seam products; then the per-scene
# polarimetric features computed by cropflow from C2 (identical for every engine).

if config["s1"]["engine"] == "preprocessed":

    include: "s1_preprocessed.smk"

else:

    include: "s1_slc.smk"


rule s1_features:
    input:
        "results/s1/scenes/{scene}_C2.tif",
    output:
        "results/s1/features/{scene}.tif",
    params:
        features=config["s1"]["features"],
        glcm=as_json(config["s1"]["glcm"]),
    log:
        "logs/s1_features/{scene}.log",
    benchmark:
        "benchmarks/s1_features/{scene}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s1-features --c2 {input} --features {params.features} --glcm {params.glcm}"
        " --out {output} > {log} 2>&1"

# Sentinel-1: per-scene C2 and per-pair coherence at the S1 seam (validated onto the project grid), then
# the per-scene polarimetric features computed by cropflow from C2 (identical for every engine).


rule s1_import_scene:
    input:
        c2=get_s1_scene_input,
        grid="results/grid/grid.json",
    output:
        "results/s1/scenes/{scene}_C2.tif",
    log:
        "logs/s1_import_scene/{scene}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s1-import --kind scene --src {input.c2} --grid {input.grid} --out {output} > {log} 2>&1"


rule s1_import_pair:
    input:
        coh=get_s1_pair_input,
        grid="results/grid/grid.json",
    output:
        "results/s1/pairs/{pair}_coh.tif",
    log:
        "logs/s1_import_pair/{pair}.log",
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s1-import --kind pair --src {input.coh} --grid {input.grid} --out {output} > {log} 2>&1"


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

# Preprocessed Sentinel-1 inputs (s1.engine: preprocessed): seam products validated against the project grid
# and copied into results/.


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

# Sentinel-1 IW SLC products through the native or the SNAP engine (s1.engine): C2 per scene (slice), coherence
# per consecutive same-track pair (every slice pair of the two passes, merged), both on the project grid. The SNAP engine writes its graph XML
# next to each output. The native engine reads SAFE folders: zips are extracted by s1_extract into
# s1.native.workdir/<job>/ (one copy per scene or pair job) as temporary outputs, removed once that job is done.


rule s1_extract:
    input:
        get_s1_zip,
    output:
        temp(directory(os.path.join(config["s1"]["native"]["workdir"], "{consumer}", "{scene}.SAFE"))),
    log:
        "logs/s1_extract/{consumer}/{scene}.log",
    conda:
        "../envs/sar.yaml"
    shell:
        "python -m cropflow s1-extract --product {input} --out {output} > {log} 2>&1"


rule s1_scene:
    input:
        product=get_s1_scene_input,
        grid="results/grid/grid.json",
        aoi=config["aoi"],
    output:
        "results/s1/scenes/{scene}_C2.tif",
    params:
        engine=config["s1"]["engine"],
        settings=as_json(config["s1"]),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    log:
        "logs/s1_scene/{scene}.log",
    benchmark:
        "benchmarks/s1_scene/{scene}.tsv"
    conda:
        "../envs/sar.yaml"
    shell:
        "python -m cropflow s1-scene --engine {params.engine} --product {input.product} --grid {input.grid}"
        " --aoi {input.aoi} --settings {params.settings} --out {output} > {log} 2>&1"


rule s1_pair:
    input:
        unpack(get_s1_pair_products),
        grid="results/grid/grid.json",
        aoi=config["aoi"],
    output:
        "results/s1/pairs/{pair}_coh.tif",
    params:
        engine=config["s1"]["engine"],
        settings=as_json(config["s1"]),
        overlap=config["s1"]["mosaic"]["overlap"],
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    log:
        "logs/s1_pair/{pair}.log",
    benchmark:
        "benchmarks/s1_pair/{pair}.tsv"
    conda:
        "../envs/sar.yaml"
    shell:
        "python -m cropflow s1-pair --engine {params.engine} --reference {input.reference}"
        " --secondary {input.secondary} --pair {wildcards.pair} --grid {input.grid} --aoi {input.aoi}"
        " --settings {params.settings} --overlap {params.overlap} --out {output} > {log} 2>&1"

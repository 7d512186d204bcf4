# Sentinel-2: Level-1C products are corrected with Sen2Cor (rule sen2cor, results/s2/l2a/<L1C name>/), Level-2A
# products are read directly; the ingest puts the bands on the project grid with the cloud mask (SCL, s2cloudless
# or both: rule s2_clouds) and a QA band per product; then one layer per date from the products of one datatake
# (adjacent MGRS tiles), merged with s2.mosaic.overlap. The layer decides the selection: layers over the cloud
# threshold (AOI, each pixel once) are written but flagged unused in their sidecar, and tiles below
# s2.min_valid_fraction do not stack them (logged, listed in the inventory report).


rule sen2cor:
    input:
        get_l1c_input,
    output:
        # <L2A name>.SAFE + sen2cor.json; not temporary: Sen2Cor is expensive. Upgrading Sen2Cor at the same path
        # does not rerun it (the version is in sen2cor.json): use --forcerun sen2cor.
        directory("results/s2/l2a/{scene}"),
    params:
        settings=as_json(config["s2"]["sen2cor"]),
        bands=config["s2"]["bands"],
    threads: 1
    resources:
        mem_mb=8000,
        runtime=int(config["s2"]["sen2cor"]["timeout_minutes"]) + 10,
    log:
        "logs/sen2cor/{scene}.log",
    benchmark:
        "benchmarks/sen2cor/{scene}.tsv"
    conda:
        # the wrapper; L2A_Process itself is an external installation (like SNAP's gpt)
        "../envs/geo.yaml"
    shell:
        "python -m cropflow sen2cor --product {input} --settings {params.settings} --bands {params.bands}"
        " --out {output} > {log} 2>&1"


rule s2_clouds:
    input:
        l1c=get_s2_cloud_l1c,
        grid="results/grid/grid.json",
        aoi=config["aoi"],
    output:
        tif="results/s2/clouds/{scene}.tif",
        meta="results/s2/clouds/{scene}.json",
    params:
        settings=as_json(config["s2"]["clouds"]["s2cloudless"]),
    threads: 2
    log:
        "logs/s2_clouds/{scene}.log",
    benchmark:
        "benchmarks/s2_clouds/{scene}.tsv"
    conda:
        "../envs/clouds.yaml"
    shell:
        "python -m cropflow s2-clouds --l1c {input.l1c} --grid {input.grid} --aoi {input.aoi}"
        " --settings {params.settings} --threads {threads} --out-tif {output.tif} --out-json {output.meta}"
        " > {log} 2>&1"


rule s2_ingest:
    input:
        product=get_s2_input,
        clouds=get_s2_cloud_mask,
        grid="results/grid/grid.json",
        aoi=config["aoi"],
    output:
        tif="results/s2/{scene}.tif",
        meta="results/s2/{scene}.json",
    params:
        bands=config["s2"]["bands"],
        invalid=config["s2"]["invalid_scl"],
        cloud=config["s2"]["cloud_scl"],
        max_cloud=config["s2"]["max_cloud_fraction"],
        method=config["s2"]["clouds"]["method"],
        keep_scl=config["s2"]["clouds"]["s2cloudless"]["scl_classes"],
    log:
        "logs/s2_ingest/{scene}.log",
    benchmark:
        "benchmarks/s2_ingest/{scene}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s2 --product {input.product} --grid {input.grid} --aoi {input.aoi}"
        " --bands {params.bands} --invalid-scl {params.invalid} --cloud-scl {params.cloud}"
        " --max-cloud {params.max_cloud} --cloud-method {params.method} --clouds {input.clouds}"
        " --s2cloudless-scl {params.keep_scl} --out-tif {output.tif} --out-json {output.meta} > {log} 2>&1"


rule s2_layer:
    input:
        unpack(get_s2_layer_products),
        grid="results/grid/grid.json",
        tiles="results/grid/tiles.gpkg",
        aoi=config["aoi"],
    output:
        tif="results/s2/layers/{layer}.tif",
        meta="results/s2/layers/{layer}.json",
    params:
        bands=config["s2"]["bands"],
        overlap=config["s2"]["mosaic"]["overlap"],
        max_cloud=config["s2"]["max_cloud_fraction"],
        min_valid=config["s2"]["min_valid_fraction"],
    log:
        "logs/s2_layer/{layer}.log",
    benchmark:
        "benchmarks/s2_layer/{layer}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s2-layer --layer {wildcards.layer} --products {input.products} --grid {input.grid}"
        " --tiles {input.tiles} --aoi {input.aoi} --bands {params.bands} --overlap {params.overlap}"
        " --max-cloud {params.max_cloud} --min-valid {params.min_valid} --out-tif {output.tif}"
        " --out-json {output.meta} > {log} 2>&1"

# Sentinel-2 L2A: bands onto the project grid, SCL validity mask and QA band per product; then one layer per
# date from the products of one datatake (adjacent MGRS tiles), merged with s2.mosaic.overlap. The layer decides
# the selection: layers over the cloud threshold (AOI, each pixel once) are written but flagged unused in their
# sidecar, and tiles below s2.min_valid_fraction do not stack them (logged, listed in the inventory report).


rule s2_ingest:
    input:
        product=get_s2_input,
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
    log:
        "logs/s2_ingest/{scene}.log",
    benchmark:
        "benchmarks/s2_ingest/{scene}.tsv"
    conda:
        "../envs/geo.yaml"
    shell:
        "python -m cropflow s2 --product {input.product} --grid {input.grid} --aoi {input.aoi}"
        " --bands {params.bands} --invalid-scl {params.invalid} --cloud-scl {params.cloud}"
        " --max-cloud {params.max_cloud} --out-tif {output.tif} --out-json {output.meta} > {log} 2>&1"


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

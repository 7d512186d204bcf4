# Sentinel-2 L2A: bands onto the project grid, SCL validity mask, cloud fraction over the AOI; products over
# the cloud threshold are written but flagged unused in their sidecar (logged, listed in the report).


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

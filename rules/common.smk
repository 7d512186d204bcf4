# Parse-time logic: config validation, the plan (grid, tiles, inventory), wildcard constraints and the
# input functions used by the rule files. Rules themselves only wire files.

import functools
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

# Jobs run `python -m cropflow`: the package is found through PYTHONPATH. Without --sdm conda, `python` is
# the interpreter running snakemake (the virtual environment, activated or not); with it, each rule's env.
PACKAGE_DIR = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PACKAGE_DIR))
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    shell.prefix(f"export PYTHONPATH={shlex.quote(str(PACKAGE_DIR))}; ")
else:
    INTERPRETER_DIR = shlex.quote(str(Path(sys.executable).parent))
    shell.prefix(f'export PYTHONPATH={shlex.quote(str(PACKAGE_DIR))} PATH={INTERPRETER_DIR}:"$PATH"; ')

validate(config, schema="../config/schema.yaml")

from cropflow.plan import (acquisition_slices, build_plan, indexed_path, layer_products, pair_slices,  # noqa: E402
                           path_index)

MODELS = list(config["models"]["enabled"])


@functools.cache
def model_kind(model):
    from cropflow.models import get_spec

    return get_spec(model).kind


def check_model_config():
    """Stop at DAG building on settings that cannot run: patch models without patches, fusion or in-season
    models that are not enabled."""
    for model in MODELS:
        if model_kind(model) == "patch" and not config["samples"]["patches"]:
            raise ValueError(f"models.enabled: {model} is a patch model; set samples.patches: true")
    if config["fusion"]["enabled"]:
        missing = [m for m in [*config["fusion"]["members"], config["fusion"]["fallback"]] if m not in MODELS]
        if missing:
            raise ValueError(f"fusion: models {missing} are not in models.enabled; enable them or fix fusion")
    if config["inseason"]["enabled"] and model_kind(config["inseason"]["model"]) == "patch" \
            and not config["samples"]["patches"]:
        raise ValueError(f"inseason.model {config['inseason']['model']} is a patch model; set samples.patches: true")


def get_area_boundaries(wildcards):
    """The administrative units the areas are also estimated for ([] for the whole map only)."""
    return [config["areas"]["boundaries"]] if config["areas"]["boundaries"] else []


def area_unit_args():
    """The areas command's unit options (none without areas.boundaries)."""
    boundaries = config["areas"]["boundaries"]
    if not boundaries:
        return ""
    return f"--boundaries {shlex.quote(boundaries)} --unit-field {shlex.quote(config['areas']['unit_field'])}"


def map_side(side):
    """A compare_maps side as (label, class-map path): an enabled model's mosaic, or a GeoTIFF path."""
    if side in MAPPED_MODELS:
        return side, f"results/maps/{side}/mosaic.tif"
    path = Path(side)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        raise ValueError(f"compare_maps: {side!r} is neither an enabled model ({', '.join(MAPPED_MODELS)}) "
                         "nor an existing class-map GeoTIFF (.tif); enable the model or fix the path")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", path.stem):
        raise ValueError(f"compare_maps: the file name of {side!r} names its outputs; rename it to letters, "
                         "digits, '_', '.' or '-' only")
    return path.stem, side


def map_comparisons():
    """{'<a>_vs_<b>': (path a, path b, label a, label b)} of compare_maps, checked at DAG building."""
    pairs = {}
    for entry in config["compare_maps"]:
        (label_a, path_a), (label_b, path_b) = map_side(entry["a"]), map_side(entry["b"])
        name = f"{label_a}_vs_{label_b}"
        if label_a == label_b:
            raise ValueError(f"compare_maps: {entry['a']!r} and {entry['b']!r} have one name {label_a!r}; "
                             "compare two different maps (rename one file)")
        if name in pairs:
            raise ValueError(f"compare_maps: the comparison {name} is configured twice")
        pairs[name] = (path_a, path_b, label_a, label_b)
    return pairs


# settings that cannot run stop here, before the inputs are scanned
check_model_config()
#: models whose maps the workflow makes (tiles, mosaics, STAC): every enabled model (patch models read halos)
MAPPED_MODELS = list(MODELS)
MAP_COMPARISONS = map_comparisons()
PLAN = build_plan(config)
TILES = PLAN.tile_ids
#: the blocks of grid.block_tiles x grid.block_tiles tiles, one job each of stack, labels_tile and samples_tile
BLOCKS = sorted(PLAN.blocks)
SPLITS = ["train", "val", "test"]
# Inventory lookups by id, built once: a pandas filter per job costs milliseconds, seconds per 1,000 jobs.
S1_SCENE_PATHS = path_index(PLAN.s1_scenes, "scene")
S1_PAIR_PATHS = path_index(PLAN.s1_pairs, "pair")
S2_PATHS = path_index(PLAN.s2_scenes, "scene")
S2_ROWS = {row["scene"]: row for row in PLAN.s2_scenes.to_dict("records")}


wildcard_constraints:
    scene=r"S[12][A-D]_[A-Z0-9_]+",
    layer=r"S2[A-D]_\d{8}_R\d{3}",
    acq=r"S1[A-D]_\d{8}_R\d{3}_[0-9A-F]{6}",
    pair=r"R\d{3}_\d{8}_\d{8}",
    consumer=r"scene|R\d{3}_\d{8}_\d{8}",
    tile=r"E\d{7}N\d{7}",
    block=r"E\d{7}N\d{7}(x\d+)?",
    model=r"[a-z0-9_]+",
    split=r"train|val|test",


def as_json(value):
    """A config value as a shell-quoted JSON argument."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def s1_engine_input(scene, consumer):
    """What an S1 engine job reads for one scene: the product, or for the native engine the SAFE folder that
    rule s1_extract makes of a zip for that job alone (consumer "scene" or the pair id), a temporary output
    deleted once the job is done. Not shared between jobs: a new scene's pairs then extract their neighbours
    again without rerunning the neighbours' scene and other pair jobs (a shared temporary would rerun the
    whole track)."""
    path = indexed_path(S1_SCENE_PATHS, scene)
    if config["s1"]["engine"] == "native" and path.endswith(".zip"):
        return f"{config['s1']['native']['workdir']}/{consumer}/{scene}.SAFE"
    return path


def get_s1_scene_input(wildcards):
    return s1_engine_input(wildcards.scene, "scene")


def get_s1_zip(wildcards):
    return indexed_path(S1_SCENE_PATHS, wildcards.scene)


def get_s1_pair_input(wildcards):
    return indexed_path(S1_PAIR_PATHS, wildcards.pair)


def get_s1_pair_products(wildcards):
    """The reference and secondary slices of every slice pair of a coherence pair, in matching order."""
    slice_pairs = pair_slices(PLAN, wildcards.pair)
    return {"reference": [s1_engine_input(r, wildcards.pair) for r, _ in slice_pairs],
            "secondary": [s1_engine_input(s, wildcards.pair) for _, s in slice_pairs]}


def get_s1_acq_slices(wildcards):
    """The per-slice C2 rasters of one acquisition, earliest slice first."""
    return expand("results/s1/scenes/{scene}_C2.tif", scene=acquisition_slices(PLAN, wildcards.acq))


def get_acq_c2(wildcards):
    """An acquisition's C2: its slice's raster when it has one slice (no copy job), else the assembled one."""
    slices = acquisition_slices(PLAN, wildcards.acq)
    if len(slices) == 1:
        return f"results/s1/scenes/{slices[0]}_C2.tif"
    return f"results/s1/acquisitions/{wildcards.acq}_C2.tif"


def s2_row(scene):
    """The S2 inventory row (a dict) of one product."""
    if scene not in S2_ROWS:
        raise KeyError(f"{scene} is not in the S2 inventory")
    return S2_ROWS[scene]


def get_s2_input(wildcards):
    """What the ingest reads: an L2A product itself, or for an L1C the folder rule sen2cor made of it."""
    if s2_row(wildcards.scene).get("level", "L2A") == "L1C":
        return f"results/s2/l2a/{wildcards.scene}"
    return indexed_path(S2_PATHS, wildcards.scene)


def get_l1c_input(wildcards):
    """The Level-1C product (inputs.s2) that rule sen2cor corrects."""
    row = s2_row(wildcards.scene)
    if row.get("level", "L2A") != "L1C":
        raise ValueError(f"{wildcards.scene} is not a Level-1C product: rule sen2cor corrects only L1C inputs")
    return str(row["path"])


def s2_cloud_method():
    return config["s2"]["clouds"]["method"]


def check_s2_clouds():
    """Stop at DAG building when s2cloudless masks are asked for but an acquisition has no Level-1C product."""
    if s2_cloud_method() == "scl" or PLAN.s2_scenes.empty:
        return
    missing = PLAN.s2_scenes.loc[PLAN.s2_scenes["cloud_l1c"] == "", "scene"].tolist()
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"s2.clouds.method: {s2_cloud_method()} needs the Level-1C product (TOA, band B10) of every "
                         f"acquisition; these have only Level-2A: {missing[0]}{more}. Add their L1C to "
                         f"{config['inputs']['s2']} or set s2.clouds.method: scl")


def get_s2_cloud_l1c(wildcards):
    """The Level-1C product whose TOA bands give the s2cloudless mask of a scene."""
    return str(s2_row(wildcards.scene)["cloud_l1c"])


def get_s2_cloud_mask(wildcards):
    """The s2cloudless mask an ingest combines with SCL ([] with s2.clouds.method: scl)."""
    if s2_cloud_method() == "scl":
        return []
    return [f"results/s2/clouds/{wildcards.scene}.tif"]


def warn_missing_sen2cor():
    """One warning at DAG building when L1C products need Sen2Cor and L2A_Process is not found here; not an
    error, as on a cluster only the compute nodes may have it (the sen2cor job fails there if not)."""
    if PLAN.s2_scenes.empty or not (PLAN.s2_scenes["level"] == "L1C").any():
        return
    from cropflow.sen2cor import find_l2a_process

    try:
        find_l2a_process(config["s2"]["sen2cor"]["l2a_process"], "the Level-1C products", config["inputs"]["s2"])
    except FileNotFoundError as err:
        n = int((PLAN.s2_scenes["level"] == "L1C").sum())
        print(f"WARNING: {n} Level-1C product(s) need Sen2Cor: {err}", file=sys.stderr)


check_s2_clouds()
warn_missing_sen2cor()
def get_s2_layer_products(wildcards):
    """The ingested products of one same-date layer and their sidecars."""
    scenes = layer_products(PLAN, wildcards.layer)
    return {"products": expand("results/s2/{scene}.tif", scene=scenes),
            "metas": expand("results/s2/{scene}.json", scene=scenes)}


def get_stack_inputs(wildcards):
    """The products of every tile of a stack block (each listed once) and the grid."""
    tiles = PLAN.blocks[wildcards.block]
    used = {source: stack_paths(source, sorted({i for tile in tiles for i in PLAN.tile_inputs[tile][source]}))
            for source in ("s1", "coh", "s2")}
    return {**used, "grid": "results/grid/grid.json"}


def stack_paths(source, ids):
    # f-strings rather than expand(): this runs for every block, thousands of times for a province
    if source == "s1":
        return [f"results/s1/features/{acq}.tif" for acq in ids]
    if source == "coh":
        return [f"results/s1/pairs/{pair}_coh.tif" for pair in ids] if config["s1"]["coherence"] else []
    # each layer's sidecar (.json, read next to its .tif) is made by the same job: listing it too would only add
    # an input per layer and block to the DAG (bench/dag_scale.py)
    return [f"results/s2/layers/{layer}.tif" for layer in ids]


def get_stack_selection(wildcards):
    """{tile: {source: products}} of a stack block: which of the block's products each tile's cube stacks."""
    return as_json({tile: {source: stack_paths(source, ids) for source, ids in PLAN.tile_inputs[tile].items()}
                    for tile in PLAN.blocks[wildcards.block]})


def tile_cube(tile):
    """The cube of a tile, in the folder its stack block writes."""
    return f"results/cubes/{PLAN.tile_block[tile]}/{tile}.zarr"


def tile_cubes(tiles):
    """The stack block folders holding the cubes of ``tiles`` (each once; the inputs of a job reading them)."""
    return sorted({f"results/cubes/{PLAN.tile_block[tile]}" for tile in tiles})


def get_stack_bands():
    s1 = list(config["s1"]["features"])
    if config["s1"]["glcm"]["enabled"]:
        s1 += list(config["s1"]["glcm"]["features"])
    return {"s1": s1, "coh": list(config["s1"]["coherence"]), "s2": list(config["s2"]["bands"])}


def tile_neighbours(tile, patches):
    """The tiles around ``tile``, from which patches are read across its edges ([] without ``patches``)."""
    if not patches:
        return []
    from cropflow.grid import neighbour_tiles

    return neighbour_tiles(PLAN.tiles, tile)


def get_infer_inputs(wildcards):
    """{"cube": the stack folder holding the map tile's cube, "neighbours": those holding the cubes around it,
    other than its own, from which a patch model reads its halo (none for a pixel model)}. One input function
    per job for both: the DAG of a province calls it for every tile and model."""
    own = tile_cubes([wildcards.tile])
    around = tile_neighbours(wildcards.tile, model_kind(wildcards.model) == "patch")
    return {"cube": own, "neighbours": [b for b in tile_cubes(around) if b not in own]}


def get_infer_cube_args(wildcards):
    """The arguments naming the cubes of :func:`get_infer_inputs`: ``--cube <cube> --neighbours <cubes>``."""
    around = tile_neighbours(wildcards.tile, model_kind(wildcards.model) == "patch")
    return " ".join(["--cube", tile_cube(wildcards.tile), "--neighbours", *map(tile_cube, around)])


def tile_labels(tile, kind):
    """A tile's label raster (``kind``: class, parcel or cropland), in the folder its labels block writes."""
    return f"results/labels/tiles/{PLAN.tile_block[tile]}/{tile}_{kind}.tif"


def label_blocks():
    """Every labels block folder (the inputs of a job reading every tile's labels)."""
    return [f"results/labels/tiles/{block}" for block in BLOCKS]


def get_samples_inputs(wildcards):
    """The stack folders holding the cubes of a samples block's tiles and, when the samples hold patches, of
    the tiles around them; and the block's label folder."""
    tiles = PLAN.blocks[wildcards.block]
    around = {n for tile in tiles for n in tile_neighbours(tile, config["samples"]["patches"])}
    return {"cubes": tile_cubes(set(tiles) | around), "labels": f"results/labels/tiles/{wildcards.block}"}


def get_samples_selection(wildcards):
    """{tile: {"cube", "neighbours", "classes", "parcel_ids"}} of a samples block: each tile's cube, the cubes
    around it (patches only), and its label rasters."""
    patches = config["samples"]["patches"]
    return as_json({tile: {"cube": tile_cube(tile),
                           "neighbours": [tile_cube(n) for n in tile_neighbours(tile, patches)],
                           "classes": tile_labels(tile, "class"), "parcel_ids": tile_labels(tile, "parcel")}
                    for tile in PLAN.blocks[wildcards.block]})


def tile_samples_stores(split):
    """Every tile's sample store of ``split``, in the folders the samples blocks write."""
    return [f"results/samples/tiles/{PLAN.tile_block[tile]}/{tile}/{split}.zarr" for tile in TILES]


def get_model_params(wildcards):
    return config["models"].get(wildcards.model, {})


def get_final_outputs():
    outputs = [
        "results/inventory/s1_scenes.csv",
        "results/inventory/s2_scenes.csv",
        "results/inventory/s2_selection.csv",
        "results/inventory/report.csv",
        "results/inventory/s2_layers.csv",
        "results/partition/split_report.csv",
        "results/report/profiles.png",
    ]
    for model in MODELS:
        outputs += [f"results/metrics/{model}.json", f"results/metrics/{model}_confusion.png"]
    for model in MAPPED_MODELS:
        outputs += [f"results/maps/{model}/mosaic.tif", f"results/maps/{model}/mosaic_uncertainty.tif",
                    f"results/maps/{model}/quicklook.png", f"results/maps/{model}/uncertainty.png"]
    if MAPPED_MODELS:
        outputs += ["results/stac"]
    outputs += get_compared_metrics() + ["results/metrics/comparison.csv"]
    if config["inseason"]["enabled"]:
        outputs += [f"results/inseason/{config['inseason']['model']}.csv"]
    if config["interpret"]["enabled"]:
        outputs += [f"results/interpret/{model}" for model in MODELS]
    if config["selection"]["enabled"]:
        outputs += ["results/selection/bands.json"]
    if config["areas"]["enabled"]:
        outputs += [f"results/areas/{model}.csv" for model in MAPPED_MODELS]
    for name in MAP_COMPARISONS:
        outputs += expand("results/changes/{name}{suffix}", name=name, suffix=[".tif", "_transitions.csv", ".json"])
    return outputs


def get_stac_inputs(wildcards):
    """Every map the STAC catalog describes (tile class and uncertainty maps, mosaics) and the tiles' cubes,
    whose attributes name the input products."""
    maps = []
    for model in MAPPED_MODELS:
        maps += expand("results/maps/{model}/{tile}_{kind}.tif", model=model, tile=TILES,
                       kind=["class", "uncertainty"])
        maps += [f"results/maps/{model}/mosaic.tif", f"results/maps/{model}/mosaic_uncertainty.tif"]
    return {"maps": maps, "cubes": tile_cubes(TILES)}


def get_change_inputs(wildcards):
    path_a, path_b, _, _ = MAP_COMPARISONS[wildcards.change]
    return {"a": path_a, "b": path_b}


def change_labels(wildcards):
    _, _, label_a, label_b = MAP_COMPARISONS[wildcards.change]
    return f"{shlex.quote(label_a)} {shlex.quote(label_b)}"


def finetuned_model():
    """The fine-tuned model's name, or None without transfer learning."""
    if not config["transfer"]["enabled"]:
        return None
    meta = Path(config["transfer"]["pretrained"]) / "meta.json"
    if not meta.is_file():
        raise ValueError(f"transfer.pretrained: {meta} not found; point it at a trained model bundle folder "
                         "(results/models/<model> of an earlier run)")
    return json.loads(meta.read_text())["name"] + "_finetuned"


def get_compared_metrics(wildcards=None):
    """Every metrics JSON of the run: enabled models, the fine-tuned model, the fusion."""
    names = list(MODELS) + ([finetuned_model()] if config["transfer"]["enabled"] else [])
    out = [f"results/metrics/{name}.json" for name in names]
    if config["fusion"]["enabled"]:
        out.append("results/metrics/fusion.json")
    return out


def get_training_samples(split):
    """A training job's samples of one split. With training.on_new_imagery: keep they are ancient(): samples that
    new imagery updated do not retrain an existing model (a missing model is still trained)."""
    path = f"results/samples/{split}.zarr"
    return ancient(path) if config["training"]["on_new_imagery"] == "keep" else path


def warn_keep_with_acquisitions():
    """One warning at DAG building: kept models and a time axis that moves with the products."""
    if config["training"]["on_new_imagery"] == "keep" and config["stack"]["time_axis"] == "acquisitions":
        print("WARNING: training.on_new_imagery: keep with stack.time_axis: acquisitions: a product on a new "
              "date lengthens every cube's time axis, and inference with the kept models then stops naming "
              "the dates; use stack.time_axis: regular to keep models across new imagery", file=sys.stderr)


warn_keep_with_acquisitions()


def check_conda_envs():
    """Stop at DAG building when a rule runs a command without a conda environment or names an environment file
    that is missing (naming both), with or without --sdm conda, so it is found before a cluster run needs it.
    Called from the Snakefile once every rule file is included."""
    from cropflow.environments import RuleEnv, conda_env_problems

    problems = conda_env_problems(
        RuleEnv(each.name, each.conda_env, each.snakefile, not each.norun) for each in workflow.rules
    )
    if problems:
        raise ValueError("conda environments: " + "; ".join(problems))


#: conda environment of the training rules: TensorFlow's CUDA build when GPUs are requested
TRAIN_ENV = "../envs/train-gpu.yaml" if config["training"]["gpus"] > 0 else "../envs/ml.yaml"


def get_train_gpus(wildcards):
    """GPUs a training job asks for: training.gpus for neural networks, none for the random forest."""
    from cropflow.models import get_spec

    return config["training"]["gpus"] if get_spec(wildcards.model).family == "keras" else 0




#: the Snakemake report `snakemake --report` writes; archived when it exists before `snakemake archive`
ARCHIVED_REPORT = "results/report.html"


def get_archived_models():
    """The models whose weights and metrics the archive records: enabled and fine-tuned ones."""
    return list(MODELS) + ([finetuned_model()] if config["transfer"]["enabled"] else [])


def get_archive_inputs(wildcards):
    """What the archive packs, file by file (so that it is up to date, and no stale file of another
    configuration gets in): inventory tables, partition report, models, metrics, profiles, the enabled
    experiments' tables, the report when it was built; and the parcels the split manifest is read from."""
    inventory = ["s1_scenes", "s1_pairs", "s1_skipped", "s1_coverage", "s1_acquisitions", "s2_scenes",
                 "s2_layers_planned", "skipped", "s2_selection", "report", "s2_layers"]
    results = [f"results/inventory/{name}.csv" for name in inventory]
    results += [f"results/partition/split_report.{ext}" for ext in ("csv", "json", "png")]
    results += [f"results/models/{model}" for model in get_archived_models()]
    results += get_compared_metrics() + [f"results/metrics/{model}_confusion.png" for model in MODELS]
    results += ["results/metrics/comparison.csv", "results/metrics/comparison.png", "results/report/profiles.png"]
    if config["inseason"]["enabled"]:
        results += [f"results/inseason/{config['inseason']['model']}.{ext}" for ext in ("csv", "png")]
    if config["selection"]["enabled"]:
        results += ["results/selection/bands.json", "results/selection/relevance.csv"]
    if config["areas"]["enabled"]:
        results += [f"results/areas/{model}.csv" for model in MAPPED_MODELS]
    if Path(ARCHIVED_REPORT).is_file():
        results.append(ARCHIVED_REPORT)
    scene_lists = [f"results/inventory/{name}.csv" for name in ("s1_scenes", "s1_pairs", "s2_scenes")]
    return {"inventory": scene_lists, "parcels": "results/labels/parcels.gpkg", "results": results}

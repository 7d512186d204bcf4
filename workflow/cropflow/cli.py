"""The ``cropflow`` command line: one subcommand per workflow stage, each a thin call into the package.

Every Snakemake rule runs ``python -m cropflow <stage> ...``; the same commands work by hand.
Heavy libraries are imported inside each command so that light stages start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

log = logging.getLogger("cropflow")

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help_text: str, args_fn: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as subcommand ``name`` whose arguments ``args_fn`` declares."""

    def register(run: Callable[[argparse.Namespace], None]):
        COMMANDS[name] = (run, args_fn, help_text)
        return run

    return register


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({err})") from err


def _required(*names: str) -> Callable[[argparse.ArgumentParser], None]:
    """An arguments function declaring required ``--<name>`` options, for commands that take only paths."""

    def args_fn(p: argparse.ArgumentParser) -> None:
        for name in names:
            p.add_argument(f"--{name}", required=True)

    return args_fn


def _merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (nested mappings merged, other values replaced)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _load_grid(path: str):
    from cropflow.grid import ProjectGrid

    with open(path) as f:
        return ProjectGrid.from_dict(json.load(f))


# --- simulate -------------------------------------------------------------------------------------------

def _simulate_args(p):
    p.add_argument("--config", nargs="+", required=True,
                   help="workflow config file(s), later ones overriding earlier ones as with snakemake --configfile;"
                        " their aoi, crs, resolution, season, seed, legend and simulate keys are used")
    p.add_argument("--out", required=True, help="output folder (e.g. data/demo)")


@command("simulate", "write the deterministic demo inputs (parcels, S1 seam products, S2 L2A SAFEs)", _simulate_args)
def _simulate(a):
    import yaml

    from cropflow.simulate import simulate

    cfg: dict = {}
    for path in a.config:
        with open(path) as f:
            cfg = _merge(cfg, yaml.safe_load(f) or {})
    summary = simulate(cfg["aoi"], a.out, crs=cfg["crs"], resolution=cfg["resolution"],
                       season=(cfg["season"]["start"], cfg["season"]["end"]), seed=cfg["seed"],
                       legend_path=cfg["legend"], **cfg.get("simulate", {}))
    print(json.dumps(summary, indent=2, default=str))


# --- inventory and grid ---------------------------------------------------------------------------------

def _inventory_args(p):
    _required("s1", "s2", "cache", "aoi", "tiles")(p)
    p.add_argument("--s1-settings", type=_json, required=True, help="the config's s1 section as JSON")
    p.add_argument("--s2-settings", type=_json, default={},
                   help="the config's s2 section (prefer, clouds.method) as JSON")
    p.add_argument("--season", nargs=2, metavar=("START", "END"), required=True)
    p.add_argument("--resolution", type=float, required=True, help="the project grid's pixel size (m)")
    _required("out-s1", "out-pairs", "out-s1-skipped", "out-s1-coverage", "out-s2", "out-skipped",
              "out-s2-layers", "out-s1-acquisitions")(p)


@command("inventory", "scan the input folders and write the product, layer, pair and skipped-product tables",
         _inventory_args)
def _inventory(a):
    import geopandas as gpd

    from cropflow import inventory
    from cropflow.grid import read_aoi
    from cropflow.plan import inventories

    tiles = gpd.read_file(a.tiles)
    config = {"inputs": {"s1": a.s1, "s2": a.s2, "cache": a.cache}, "s1": a.s1_settings, "s2": a.s2_settings,
              "season": {"start": a.season[0], "end": a.season[1]}}
    inv = inventories(config, read_aoi(a.aoi), tiles, tiles.crs.to_string(), a.resolution)
    scenes = inv.s1.scenes
    season = inventory.in_season(scenes, *a.season)
    log.info("S1 scenes: %d found, %d in the season %s..%s", len(scenes), len(season), *a.season)
    inventory.write_inventory(scenes.assign(in_season=scenes.index.isin(season.index)), a.out_s1)
    log.info("S2 products: %d get jobs, in %d same-date layers", len(inv.s2.products), len(inv.s2.layers))
    inventory.write_inventory(inv.s2.products, a.out_s2)
    inventory.write_inventory(inv.s2.layers, a.out_s2_layers)
    inventory.write_inventory(inv.s1_acquisitions, a.out_s1_acquisitions)
    inventory.write_inventory(inv.s1.pairs, a.out_pairs)
    inventory.write_inventory(inv.s1.skipped, a.out_s1_skipped)
    inventory.write_inventory(inv.s1.coverage, a.out_s1_coverage)
    inventory.write_inventory(inv.skipped, a.out_skipped)
    for row in inv.skipped.itertuples():
        log.warning("%s product %s skipped: %s", row.sensor, row.scene, row.reason)


def _grid_args(p):
    p.add_argument("--aoi", required=True)
    p.add_argument("--crs", default="auto")
    p.add_argument("--resolution", type=float, required=True)
    p.add_argument("--tile-size", type=float, required=True)
    _required("out-grid", "out-tiles")(p)


@command("grid", "project grid and tiles over the AOI", _grid_args)
def _grid(a):
    from cropflow.atomic import atomic_path
    from cropflow.grid import make_tiles, project_grid, read_aoi

    aoi = read_aoi(a.aoi)
    grid = project_grid(aoi, a.crs, a.resolution)
    tiles = make_tiles(grid, aoi, a.tile_size)
    with atomic_path(a.out_grid) as tmp:
        tmp.write_text(json.dumps(grid.to_dict(), indent=2))
    with atomic_path(a.out_tiles) as tmp:
        tiles.to_file(tmp, driver="GPKG", layer="tiles")
    log.info("grid %s at %g m, %d x %d px, %d tiles", grid.crs, grid.resolution, grid.width, grid.height, len(tiles))


# --- Sentinel-1 -----------------------------------------------------------------------------------------

def _s1_import_args(p):
    p.add_argument("--kind", choices=["scene", "pair"], required=True)
    _required("src", "grid", "out")(p)


@command("s1-import", "validate an S1 seam product (scene C2 or pair coherence) and copy it into results", _s1_import_args)
def _s1_import(a):
    from cropflow import s1

    grid = _load_grid(a.grid)
    (s1.import_scene if a.kind == "scene" else s1.import_pair)(a.src, a.out, grid)


def _s1_features_args(p):
    p.add_argument("--c2", required=True)
    p.add_argument("--features", nargs="+", required=True)
    p.add_argument("--glcm", type=_json, default={"enabled": False})
    p.add_argument("--window-rows", type=int, default=512)
    p.add_argument("--out", required=True)


@command("s1-features", "polarimetric features of one scene from its C2 raster", _s1_features_args)
def _s1_features(a):
    from cropflow import s1

    s1.scene_features(a.c2, a.out, a.features, window_rows=a.window_rows, glcm=s1.glcm_options(a.glcm))


def _s1_engine_args(p):
    p.add_argument("--engine", choices=["native", "snap"], required=True)
    p.add_argument("--settings", type=_json, required=True, help="the config's s1 section as JSON")
    _required("grid", "aoi", "out")(p)


def _s1_scene_args(p):
    _s1_engine_args(p)
    p.add_argument("--product", required=True, help="IW SLC SAFE zip or folder")


def _aoi_lonlat(path: str):
    from cropflow.grid import read_aoi

    return read_aoi(path).to_crs("EPSG:4326").union_all()


@command("s1-scene", "C2 of one IW SLC product on the project grid (native or SNAP engine)", _s1_scene_args)
def _s1_scene(a):
    grid = _load_grid(a.grid)
    if a.engine == "snap":
        from cropflow import snap

        snap.process_scene(a.product, a.out, grid, a.settings.get("snap", {}), aoi=_aoi_lonlat(a.aoi))
        return
    from cropflow.sar.native import NativeOptions, scene_c2

    scene_c2(a.product, grid, a.out, NativeOptions.from_config(a.settings.get("native", {})))


@command("s1-extract", "extract an IW SLC SAFE zip to the folder OUT (<scene>.SAFE) for the native engine",
         _required("product", "out"))
def _s1_extract(a):
    from pathlib import Path

    from cropflow.sar.slc import extract_safe

    out = Path(a.out)
    extract_safe(a.product, out.parent, expected=out.name)


def _s1_pair_args(p):
    _s1_engine_args(p)
    p.add_argument("--reference", nargs="+", required=True, help="reference slices, one per slice pair")
    p.add_argument("--secondary", nargs="+", required=True, help="secondary slices, in the order of --reference")
    p.add_argument("--pair", required=True)
    p.add_argument("--overlap", default="mean", help="s1.mosaic.overlap: how slice pairs merge where they overlap")


@command("s1-pair", "coherence VV/VH of one consecutive same-track SLC pair on the project grid (all its slice pairs)",
         _s1_pair_args)
def _s1_pair(a):
    import tempfile
    from pathlib import Path

    grid = _load_grid(a.grid)
    if len(a.reference) != len(a.secondary):
        raise SystemExit(f"s1-pair {a.pair}: {len(a.reference)} reference and {len(a.secondary)} secondary slices; "
                         f"give one secondary per reference")

    def one(reference: str, secondary: str, out: str) -> None:
        if a.engine == "snap":
            from cropflow import snap

            snap.process_pair(reference, secondary, out, grid, a.settings.get("snap", {}), aoi=_aoi_lonlat(a.aoi))
            return
        from cropflow.sar.native import NativeOptions, pair_coherence

        pair_coherence(reference, secondary, grid, out, NativeOptions.from_config(a.settings.get("native", {})),
                       a.pair)

    if len(a.reference) == 1:
        one(a.reference[0], a.secondary[0], a.out)
        return
    from cropflow.layers import merge_s1_rasters

    with tempfile.TemporaryDirectory(prefix=f".{a.pair}.", dir=str(Path(a.out).parent)) as tmp:
        parts = []
        for i, (ref, sec) in enumerate(zip(a.reference, a.secondary), start=1):
            log.info("pair %s: slice pair %d/%d %s x %s", a.pair, i, len(a.reference), Path(ref).name, Path(sec).name)
            parts.append(str(Path(tmp) / f"slice{i}_coh.tif"))
            one(ref, sec, parts[-1])
        names = [[Path(r).name.removesuffix(".SAFE"), Path(s).name.removesuffix(".SAFE")]
                 for r, s in zip(a.reference, a.secondary)]
        merge_s1_rasters(parts, grid, a.overlap, a.out, tags={"SLICE_PAIRS": json.dumps(names),
                                                               "SLICES": json.dumps(sorted({n for p in names for n in p}))})


def _s1_assemble_args(p):
    p.add_argument("--slices", nargs="+", required=True, help="per-slice C2 rasters of one acquisition, earliest first")
    p.add_argument("--overlap", required=True, help="s1.mosaic.overlap: mean | first")
    _required("acq", "grid", "out")(p)


@command("s1-assemble", "one acquisition's C2 from the C2 of its slices (consecutive slices of one pass)",
         _s1_assemble_args)
def _s1_assemble(a):
    from cropflow.layers import merge_s1_rasters

    merge_s1_rasters(a.slices, _load_grid(a.grid), a.overlap, a.out, tags={"ACQUISITION": a.acq})


# --- Sentinel-2 -----------------------------------------------------------------------------------------

def _s2_args(p):
    _required("product", "grid", "aoi")(p)
    p.add_argument("--bands", nargs="+", required=True)
    p.add_argument("--invalid-scl", nargs="*", type=int, default=[])
    p.add_argument("--cloud-scl", nargs="*", type=int, default=[])
    p.add_argument("--max-cloud", type=float, required=True)
    p.add_argument("--cloud-method", choices=["scl", "s2cloudless", "both"], default="scl")
    p.add_argument("--clouds", nargs="*", default=[], help="the s2cloudless mask (rule s2_clouds), if any")
    p.add_argument("--s2cloudless-scl", nargs="*", type=int, default=[0, 1, 3, 11],
                   help="SCL classes still invalid with --cloud-method s2cloudless")
    _required("out-tif", "out-json")(p)


@command("s2", "an L2A product's bands on the project grid, cloud mask and cloud fraction over the AOI", _s2_args)
def _s2(a):
    from cropflow import s2, sen2cor
    from cropflow.grid import read_aoi

    if len(a.clouds) > 1:
        raise SystemExit(f"--clouds takes one mask, got {len(a.clouds)}")
    s2.ingest_l2a(sen2cor.resolve_s2_product(a.product), _load_grid(a.grid), read_aoi(a.aoi), a.bands,
                  a.invalid_scl, a.cloud_scl, a.max_cloud, a.out_tif, a.out_json,
                  cloud_mask=a.clouds[0] if a.clouds else None, cloud_method=a.cloud_method,
                  keep_scl=a.s2cloudless_scl, provenance=sen2cor.provenance(a.product))


def _sen2cor_args(p):
    p.add_argument("--product", required=True, help="the Level-1C product (.SAFE folder or .zip)")
    p.add_argument("--settings", type=_json, required=True, help="the config's s2.sen2cor section as JSON")
    p.add_argument("--bands", nargs="+", required=True, help="bands the produced L2A must have (s2.bands)")
    p.add_argument("--out", required=True, help="output folder: <L2A>.SAFE + sen2cor.json")


@command("sen2cor", "correct a Level-1C product to Level-2A with Sen2Cor's L2A_Process (validated, atomic)",
         _sen2cor_args)
def _sen2cor(a):
    from cropflow import sen2cor

    sen2cor.run_sen2cor(a.product, a.out, sen2cor.Sen2CorOptions.from_config(a.settings), bands=a.bands)


def _s2_clouds_args(p):
    _required("l1c", "grid", "aoi", "out-tif", "out-json")(p)
    p.add_argument("--settings", type=_json, required=True, help="the config's s2.clouds.s2cloudless as JSON")
    p.add_argument("--threads", type=int, default=1)


@command("s2-clouds", "s2cloudless cloud mask of a Level-1C product over the AOI", _s2_clouds_args)
def _s2_clouds(a):
    from cropflow import clouds
    from cropflow.grid import read_aoi

    grid = _load_grid(a.grid)
    bounds = tuple(read_aoi(a.aoi).to_crs(grid.crs).total_bounds)
    clouds.s2cloudless_mask(a.l1c, grid, bounds, a.settings, a.out_tif, a.out_json, threads=a.threads)


def _s2_layer_args(p):
    _required("layer", "grid", "tiles", "aoi", "overlap", "out-tif", "out-json")(p)
    p.add_argument("--products", nargs="+", required=True, help="ingested products (results/s2/<scene>.tif)")
    p.add_argument("--bands", nargs="+", required=True)
    p.add_argument("--max-cloud", type=float, required=True)
    p.add_argument("--min-valid", type=float, default=0.0)


@command("s2-layer", "one date's S2 layer from its products (adjacent MGRS tiles of one datatake)", _s2_layer_args)
def _s2_layer(a):
    import geopandas as gpd
    import rasterio.features

    from cropflow.grid import read_aoi
    from cropflow.layers import merge_s2_layer

    grid = _load_grid(a.grid)
    aoi = read_aoi(a.aoi).to_crs(grid.crs).union_all()
    mask = rasterio.features.geometry_mask([aoi], out_shape=grid.shape, transform=grid.transform, invert=True)
    merge_s2_layer(a.products, grid, mask, gpd.read_file(a.tiles), a.bands, a.overlap, a.max_cloud, a.min_valid,
                   a.out_tif, a.out_json, layer=a.layer)


def _inventory_report_args(p):
    _required("skipped", "s2-layers-planned", "s1-acquisitions", "out", "out-layers")(p)
    p.add_argument("--s2", required=True, help="the S2 product table (s2_scenes.csv)")
    p.add_argument("--s1", required=True, help="the S1 scene table (s1_scenes.csv)")
    p.add_argument("--layers", nargs="*", default=[], help="S2 layer sidecars (results/s2/layers/<layer>.json)")


@command("inventory-report", "every product found, used or skipped with its reason; the S2 layers table",
         _inventory_report_args)
def _inventory_report(a):
    import pandas as pd

    from cropflow import inventory
    from cropflow.inventory_report import inventory_report, layer_table

    sidecars = []
    for path in a.layers:
        with open(path) as f:
            sidecars.append(json.load(f))
    report = inventory_report(pd.read_csv(a.s2), pd.read_csv(a.s1), pd.read_csv(a.s1_acquisitions),
                              pd.read_csv(a.skipped), sidecars)
    inventory.write_inventory(report, a.out)
    inventory.write_inventory(layer_table(sidecars), a.out_layers)
    counts = report.groupby(["sensor", "status"]).size().to_dict()
    log.info("inventory report: %s", counts)
    for row in report[report["status"] == "skipped"].itertuples():
        log.info("%s %s skipped at %s: %s", row.sensor, row.product, row.stage, row.reason)


def _s2_selection_args(p):
    p.add_argument("--inputs", nargs="*", default=[])
    p.add_argument("--out", required=True)


@command("s2-selection", "table of the S2 products' cloud fractions and whether each was stacked", _s2_selection_args)
def _s2_selection(a):
    import pandas as pd

    from cropflow.atomic import atomic_path

    rows = []
    for path in a.inputs:
        with open(path) as f:
            rows.append(json.load(f))
    table = pd.DataFrame(rows, columns=["scene", "datetime", "tile", "cloud_fraction", "valid_fraction",
                                        "coverage", "used", "reason"])
    with atomic_path(a.out) as tmp:
        table.sort_values("datetime").to_csv(tmp, index=False)
    log.info("%d S2 products, %d used", len(table), int(table["used"].sum()) if len(table) else 0)


# --- labels and partition -------------------------------------------------------------------------------

def _labels_args(p):
    _required("parcels", "label-field", "aoi", "grid", "legend")(p)
    p.add_argument("--min-pixels", type=int, default=1)
    _required("out", "out-dropped")(p)


@command("labels", "clean the parcels (CRS, geometry, legend, AOI) and record every dropped parcel", _labels_args)
def _labels(a):
    import pandas as pd

    from cropflow import labels, partition
    from cropflow.grid import read_aoi
    from cropflow.legend import Legend

    grid = _load_grid(a.grid)
    kept, dropped = labels.read_parcels(a.parcels, a.label_field, Legend.load(a.legend), grid.crs, read_aoi(a.aoi))
    kept, small = labels.count_pixels(kept, grid, a.min_pixels)
    partition.write_parcels(kept, a.out)
    partition.write_dropped(pd.concat([dropped, small], ignore_index=True), a.out_dropped)


def _partition_args(p):
    p.add_argument("--parcels", required=True, help="cleaned parcels (labels stage)")
    p.add_argument("--dropped", required=True)
    p.add_argument("--input-parcels", required=True, help="the original parcel file, to account for every parcel")
    p.add_argument("--legend", required=True)
    p.add_argument("--cell-size", type=float, required=True)
    p.add_argument("--fractions", type=_json, required=True)
    p.add_argument("--candidates", type=int, default=500)
    p.add_argument("--subsample", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True)
    p.add_argument("--out-report", required=True, help="split report CSV (its JSON summary is written beside it)")
    p.add_argument("--out-plot", required=True)


@command("partition", "assign parcels to train/val/test by grid cell and write the split report", _partition_args)
def _partition(a):
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    from cropflow import partition
    from cropflow.legend import Legend

    parcels = gpd.read_file(a.parcels)
    dropped = pd.read_csv(a.dropped)
    n_input = int(pyogrio.read_info(a.input_parcels)["features"]) if not a.input_parcels.endswith(
        (".parquet", ".geoparquet")) else len(gpd.read_parquet(a.input_parcels))
    split = partition.partition(parcels, dropped, a.cell_size, a.fractions, a.candidates, a.subsample, a.seed)
    partition.write_parcels(split, a.out)
    partition.split_report(split, dropped, n_input, a.out_report, a.out_plot, Legend.load(a.legend))


def _labels_tile_args(p):
    _required("parcels", "grid", "tiles", "legend")(p)
    p.add_argument("--tile", nargs="+", required=True, help="the tiles (a block of the tile lattice, or one)")
    p.add_argument("--cropland-mask", default="none", help="land-cover raster (non-zero = cropland) or 'none'")
    p.add_argument("--out", required=True,
                   help="folder of <tile>_class.tif, <tile>_parcel.tif, <tile>_cropland.tif; it appears when all are "
                        "done")


@command("labels-tile", "the class, parcel-id and cropland rasters of some tiles", _labels_tile_args)
def _labels_tile(a):
    from pathlib import Path

    import geopandas as gpd

    from cropflow import labels
    from cropflow.atomic import atomic_path
    from cropflow.grid import tile_grid
    from cropflow.legend import Legend

    grid, tiles, legend = _load_grid(a.grid), gpd.read_file(a.tiles), Legend.load(a.legend)
    parcels = gpd.read_file(a.parcels)
    mask = None if a.cropland_mask in ("", "none") else a.cropland_mask
    with atomic_path(a.out, directory=True) as tmp:
        Path(tmp).mkdir(parents=True)
        for tile in a.tile:
            out = {kind: Path(tmp) / f"{tile}_{kind}.tif" for kind in ("class", "parcel", "cropland")}
            labels.write_label_tile(parcels, mask, tile_grid(grid, tiles, tile), tile, out["class"],
                                    out["parcel"], out["cropland"], legend)


# --- stack and samples ----------------------------------------------------------------------------------

def _stack_args(p):
    _required("grid", "tiles")(p)
    p.add_argument("--inputs", type=_json, required=True,
                   help='{tile: {"s1": [feature rasters], "coh": [coherence rasters], "s2": [layer rasters]}}: the '
                        "tiles to stack and the products overlapping each")
    p.add_argument("--bands", type=_json, required=True, help='{"s1": [...], "coh": [...], "s2": [...]}')
    p.add_argument("--dates", type=_json, required=True, help='{"s1": [ISO dates], ...} target dates')
    p.add_argument("--mode", default="chronological")
    p.add_argument("--gapfill", default="interpolate")
    p.add_argument("--knn-k", type=int, default=4)
    p.add_argument("--out", required=True, help="folder of the cubes, <tile>.zarr each; it appears when all are done")


@command("stack", "the feature cubes (Zarr) of some tiles from the per-scene products overlapping each", _stack_args)
def _stack(a):
    from pathlib import Path

    import geopandas as gpd
    import numpy as np

    from cropflow import stack
    from cropflow.atomic import atomic_path
    from cropflow.grid import tile_grid

    grid, tiles = _load_grid(a.grid), gpd.read_file(a.tiles)
    targets = {s: list(np.array(d, dtype="datetime64[D]")) for s, d in a.dates.items()}
    with atomic_path(a.out, directory=True) as tmp:
        Path(tmp).mkdir(parents=True)
        for tile, used in a.inputs.items():
            layers = {"s1": stack.s1_layers(used.get("s1", []), a.bands["s1"]),
                      "coh": stack.coherence_layers(used.get("coh", []), a.bands["coh"]),
                      "s2": stack.s2_layers(used.get("s2", []), a.bands["s2"], tile)}
            stack.build_cube(layers, a.bands, targets, tile_grid(grid, tiles, tile), tile, Path(tmp) / f"{tile}.zarr",
                             mode=a.mode, gapfill=a.gapfill, knn_k=a.knn_k)


def _samples_tile_args(p):
    p.add_argument("--inputs", type=_json, required=True,
                   help='{tile: {"cube": cube, "neighbours": [cubes of the tiles around it], "classes": raster, '
                        '"parcel_ids": raster}}: the tiles to sample; patches across a tile edge are read from '
                        "its neighbours' cubes")
    for name in ("parcels", "tiles", "legend"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--out", required=True,
                   help="folder of <tile>/{train,val,test}.zarr; it appears when every tile is done")
    p.add_argument("--pixels-per-parcel", type=int, default=0)
    p.add_argument("--patch-size", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bands", default="", help="a band-selection JSON (cropflow select); all bands when empty")
    p.add_argument("--grid", default=None, help="project grid JSON (patches are edge-padded beyond it)")


@command("samples-tile", "the labelled samples of some tiles for every split", _samples_tile_args)
def _samples_tile(a):
    from pathlib import Path

    import geopandas as gpd

    from cropflow.atomic import atomic_path
    from cropflow.legend import Legend
    from cropflow.samples import tile_samples
    from cropflow.selection import load_selection

    tiles = list(gpd.read_file(a.tiles)["tile_id"])
    legend = Legend.load(a.legend)
    bands = load_selection(a.bands) if a.bands else None
    grid = _load_grid(a.grid) if a.grid else None
    for tile, used in a.inputs.items():
        missing = [k for k in ("cube", "classes", "parcel_ids") if k not in used]
        if missing:
            raise ValueError(f"samples-tile --inputs: tile {tile} lacks {', '.join(missing)} (each tile needs "
                             '"cube", "classes" and "parcel_ids"; "neighbours" is optional)')
    with atomic_path(a.out, directory=True) as tmp:
        for tile, used in a.inputs.items():
            (Path(tmp) / tile).mkdir(parents=True)
            tile_samples(used["cube"], used["classes"], used["parcel_ids"], a.parcels, tile, tiles, legend.ids,
                         legend.names, {s: Path(tmp) / tile / f"{s}.zarr" for s in ("train", "val", "test")},
                         pixels_per_parcel=a.pixels_per_parcel, patch_size=a.patch_size, seed=a.seed, bands=bands,
                         neighbours=used.get("neighbours", []), grid=grid)


def _samples_merge_args(p):
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out", required=True)


@command("samples-merge", "merge the per-tile sample stores of one split", _samples_merge_args)
def _samples_merge(a):
    from cropflow.samples import merge_samples

    n = merge_samples(a.inputs, a.out)
    log.info("%d samples in %s", n, a.out)


# --- models ---------------------------------------------------------------------------------------------

def _train_args(p):
    _required("model", "train", "val")(p)
    p.add_argument("--params", type=_json, default={})
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--backup-dir", default=None, help="state of the last finished epoch, to resume from")
    p.add_argument("--in-memory-max-mb", type=float, default=2048.0,
                   help="larger training splits are streamed from the store block by block")
    p.add_argument("--out", required=True)


@command("train", "train one registered model on the train split, early-stopped on the validation split", _train_args)
def _train(a):
    from cropflow.models import get_spec
    from cropflow.sampleset import load_split, open_split
    from cropflow.training import train

    params = dict(a.params)
    if a.threads and get_spec(a.model).family == "sklearn":
        params.setdefault("n_jobs", a.threads)  # scikit-learn's -1 would take every core, not the job's share
    stored = open_split(a.train)
    if stored.nbytes > a.in_memory_max_mb * 2**20:
        train_set, val_set = stored, open_split(a.val)
    else:
        train_set, val_set = load_split(a.train), load_split(a.val)
    train(a.model, train_set, val_set, params, a.seed, a.out, backup_dir=a.backup_dir)


@command("evaluate", "metrics of a trained model on the test split", _required("model-dir", "test", "out-json", "out-png"))
def _evaluate(a):
    from cropflow.metrics import evaluate_model
    from cropflow.sampleset import load_split

    evaluate_model(a.model_dir, load_split(a.test), a.out_json, a.out_png)


def _select_args(p):
    _required("train", "out-json", "out-csv", "out-png")(p)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--max-iter", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)


@command("select", "feature-band selection: Boruta relevance, then Spearman redundancy", _select_args)
def _select(a):
    from cropflow.sampleset import load_split
    from cropflow.selection import write_selection

    write_selection(load_split(a.train), a.seed, a.threshold, a.max_iter, a.out_json, a.out_csv, a.out_png)


def _interpret_args(p):
    _required("model-dir", "samples", "out")(p)
    p.add_argument("--max-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=42)


@command("interpret", "saliency, attention or importance figures of a trained model", _interpret_args)
def _interpret(a):
    from cropflow.interpret import interpret_model
    from cropflow.sampleset import load_split

    interpret_model(a.model_dir, load_split(a.samples), a.out, a.max_samples, a.seed)


def _fuse_args(p):
    p.add_argument("--members", nargs="+", required=True, help="model bundles averaged into the ensemble")
    _required("fallback", "val", "test", "out-json", "out-png")(p)
    p.add_argument("--alphas", type=float, nargs=3, default=(0.3, 0.95, 0.01), metavar=("START", "STOP", "STEP"))


@command("fuse", "ensemble + decision fusion with a fallback model (alpha searched on val), test metrics",
         _fuse_args)
def _fuse(a):
    from cropflow.fusion import alpha_grid, fusion_report
    from cropflow.sampleset import load_split

    fusion_report(a.members, a.fallback, load_split(a.val), load_split(a.test), alpha_grid(*a.alphas), a.out_json,
                  a.out_png)


def _compare_args(p):
    p.add_argument("--metrics", nargs="+", required=True)
    _required("out-csv", "out-png")(p)


@command("compare", "the comparison table of every model's test metrics", _compare_args)
def _compare(a):
    from cropflow.compare import comparison_table, write_comparison

    write_comparison(comparison_table(a.metrics), a.out_csv, a.out_png)


def _inseason_args(p):
    _required("model", "train", "val", "test", "out-csv", "out-png")(p)
    p.add_argument("--ends", nargs="+", required=True, help="window ends, MM-DD")
    p.add_argument("--params", type=_json, default={})
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0)


@command("inseason", "train and test one model on growing temporal windows", _inseason_args)
def _inseason(a):
    from cropflow.inseason import inseason_table, write_inseason
    from cropflow.sampleset import load_split

    table = inseason_table(a.model, load_split(a.train), load_split(a.val), load_split(a.test), a.ends, a.params,
                           a.seed)
    write_inseason(table, a.out_csv, a.out_png, a.model)


def _finetune_args(p):
    _required("pretrained", "train", "val", "out")(p)
    p.add_argument("--params", type=_json, default={})
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0)


@command("finetune", "fine-tune a pretrained keras model bundle on new samples", _finetune_args)
def _finetune(a):
    from cropflow.sampleset import load_split
    from cropflow.transfer import finetune

    finetune(a.pretrained, load_split(a.train), load_split(a.val), a.params, a.seed, a.out)


def _infer_args(p):
    _required("cube", "model-dir", "legend")(p)
    p.add_argument("--neighbours", nargs="*", default=[],
                   help="cubes of the tiles around this one: patch models read their halo from them")
    p.add_argument("--grid", default=None, help="project grid JSON (patches are edge-padded beyond it)")
    p.add_argument("--window-rows", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out-class", required=True)
    p.add_argument("--out-uncertainty", default=None)
    p.add_argument("--out-proba", default=None)


@command("infer", "classify a tile cube with a trained model, window by window", _infer_args)
def _infer(a):
    from cropflow.threads import limit_tensorflow, limit_threads

    limit_threads(a.threads)  # before numpy and the model libraries load: their pools are sized at load
    from cropflow.inference import infer_tile, read_model_meta

    if read_model_meta(a.model_dir)["family"] == "keras":
        limit_tensorflow(a.threads)

    infer_tile(a.cube, a.model_dir, a.out_class, a.out_proba, a.window_rows, a.batch_size, legend=a.legend,
               out_uncertainty=a.out_uncertainty, neighbours=a.neighbours,
               grid=_load_grid(a.grid) if a.grid else None, threads=a.threads)


def _mosaic_args(p):
    p.add_argument("--maps", nargs="+", required=True)
    p.add_argument("--cropland", nargs="*", default=[])
    _required("grid", "legend")(p)
    p.add_argument("--majority", action="store_true")
    p.add_argument("--mask-cropland", action="store_true")
    p.add_argument("--out", required=True)


@command("mosaic", "county mosaic of the tile maps with majority filter and cropland mask", _mosaic_args)
def _mosaic(a):
    from cropflow.mosaic import mosaic

    mosaic(a.maps, _load_grid(a.grid), a.out, a.legend, a.majority, a.cropland if a.mask_cropland else None)


def _mosaic_uncertainty_args(p):
    p.add_argument("--layers", nargs="+", required=True, help="the tiles' uncertainty COGs")
    _required("class-mosaic", "grid", "out")(p)


@command("mosaic-uncertainty", "county mosaic of the tiles' uncertainty layers, masked like the class mosaic",
         _mosaic_uncertainty_args)
def _mosaic_uncertainty(a):
    from cropflow.mosaic import mosaic_uncertainty

    mosaic_uncertainty(a.layers, a.class_mosaic, _load_grid(a.grid), a.out)


def _stac_args(p):
    p.add_argument("--maps", required=True, help="the maps folder (results/maps), one subfolder per model")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--tiles", nargs="+", required=True)
    p.add_argument("--cubes", nargs="+", required=True, help="the tiles' cubes, in --tiles order")
    p.add_argument("--probabilities", action="store_true", help="the tiles have probability maps")
    p.add_argument("--config", type=_json, required=True, help="the resolved workflow config as JSON")
    p.add_argument("--schemas", default=None, help="folder of local STAC extension schemas")
    _required("legend", "out")(p)


@command("stac", "STAC catalog of the maps: a collection per model, an item per tile and for the mosaic",
         _stac_args)
def _stac(a):
    from cropflow.legend import Legend
    from cropflow.stac import OfflineValidator, maps_catalog, write_catalog

    if len(a.tiles) != len(a.cubes):
        raise ValueError(f"{len(a.tiles)} tiles but {len(a.cubes)} cubes: give one cube per tile")
    catalog = maps_catalog(a.maps, a.models, dict(zip(a.tiles, a.cubes)), legend=Legend.load(a.legend),
                           config=a.config, probabilities=a.probabilities)
    write_catalog(catalog, a.out, OfflineValidator(a.schemas))
# --- area statistics and map comparison -----------------------------------------------------------------

def _areas_args(p):
    _required("metrics", "map", "out")(p)
    p.add_argument("--boundaries", default=None, help="vector file of administrative units (optional)")
    p.add_argument("--unit-field", default=None, help="attribute of --boundaries naming each unit")
    p.add_argument("--window-rows", type=int, default=1024)


@command("areas", "error-adjusted class areas with 95 percent confidence intervals (Olofsson et al. 2014)", _areas_args)
def _areas(a):
    from cropflow.areas import area_report

    if a.boundaries and not a.unit_field:
        raise ValueError(f"--boundaries {a.boundaries} needs --unit-field (areas.unit_field), the attribute naming "
                         "the units")
    area_report(a.metrics, a.map, a.out, boundaries=a.boundaries, unit_field=a.unit_field,
                window_rows=a.window_rows)


def _change_map_args(p):
    _required("a", "b", "grid", "legend", "out", "out-csv", "out-json")(p)
    p.add_argument("--labels", nargs=2, metavar=("A", "B"), default=None, help="names of the two maps")
    p.add_argument("--window-rows", type=int, default=1024)


@command("change-map", "change map and transition matrix of two class maps on the project grid", _change_map_args)
def _change_map(a):
    from pathlib import Path

    from cropflow.changes import compare_maps, write_comparison
    from cropflow.legend import Legend

    legend = Legend.load(a.legend)
    comparison = compare_maps(a.a, a.b, _load_grid(a.grid), legend, a.out, window_rows=a.window_rows)
    labels = tuple(a.labels) if a.labels else (Path(a.a).stem, Path(a.b).stem)
    write_comparison(comparison, legend, a.out_csv, a.out_json, labels)


# --- report figures -------------------------------------------------------------------------------------

@command("profiles", "temporal profiles per class and band from the train split", _required("train", "legend", "out"))
def _profiles(a):
    from cropflow.figures import temporal_profiles
    from cropflow.sampleset import load_split

    temporal_profiles(load_split(a.train), a.legend, a.out)


@command("quicklook", "PNG quicklook of a class map", _required("mosaic", "legend", "out"))
def _quicklook(a):
    from cropflow.figures import quicklook

    quicklook(a.mosaic, a.legend, a.out)


@command("uncertainty-quicklook", "PNG quicklook of an uncertainty mosaic, one panel per band",
         _required("uncertainty", "out"))
def _uncertainty_quicklook(a):
    from cropflow.figures import uncertainty_quicklook

    uncertainty_quicklook(a.uncertainty, a.out)


# --- reproducibility archive ----------------------------------------------------------------------------

def _archive_args(p):
    p.add_argument("--code", required=True, help="the workflow's folder (a git checkout: its HEAD is archived)")
    p.add_argument("--config", type=_json, required=True, help="the resolved workflow config as JSON")
    p.add_argument("--inventory", nargs="+", required=True,
                   help="the run's inventory tables (results/inventory/s1_scenes.csv, s1_pairs.csv, s2_scenes.csv)")
    p.add_argument("--parcels", required=True, help="the partitioned parcels (results/labels/parcels.gpkg)")
    p.add_argument("--models", nargs="*", default=[], help="models whose weights and metrics a re-run must match")
    p.add_argument("--results", nargs="+", required=True, help="result files and folders to put in the bundle")
    p.add_argument("--out", required=True, help="the bundle (.tar.gz)")


@command("archive", "reproducibility archive of a finished run: code at its commit, config, environment, input "
         "checksums, split, models, metrics, report, RO-Crate metadata and a sha256 manifest", _archive_args)
def _archive(a):
    from pathlib import Path

    from cropflow.archive import ArchiveRequest, build_archive

    request = ArchiveRequest(code_dir=Path(a.code), config=a.config, models=a.models, results=a.results,
                             inventories=a.inventory, parcels=a.parcels)
    figures = build_archive(request, a.out)
    log.info("archived split manifest sha256 %s; models %s", figures["split_manifest_sha256"],
             {m: f["weights_sha256"][:12] for m, f in figures["models"].items()})


def _archive_verify_args(p):
    p.add_argument("bundle", help="the archive (.tar.gz) or the folder it was unpacked into")
    p.add_argument("--inputs", default=None, metavar="WORKDIR",
                   help="also check that the inputs in this working directory have the archived sha256")
    p.add_argument("--rerun", default=None, metavar="WORKDIR",
                   help="also check that this re-run made the archived split, model weights and metrics")
    p.add_argument("--models", nargs="+", default=None,
                   help="with --rerun: the models the re-run trained (default: every archived model)")


@command("archive-verify", "check an archive against its sha256 manifest (naming every altered, missing or "
         "extra file), optionally the inputs of a re-run and its results", _archive_verify_args)
def _archive_verify(a):
    from cropflow.archive import check_rerun, opened_bundle, verify_inputs, verify_tree

    with opened_bundle(a.bundle) as root:
        result = verify_tree(root)
        problems = result.problems()
        if a.inputs and result.ok:
            problems += verify_inputs(root, a.inputs)
        if a.rerun and result.ok:
            problems += check_rerun(root, a.rerun, a.models)
    if problems:
        raise ValueError(f"{a.bundle}: " + "; ".join(problems))
    log.info("%s: %d files match %s%s%s", a.bundle, result.checked, "manifest-sha256.txt",
             f"; inputs in {a.inputs} match" if a.inputs else "",
             f"; the re-run in {a.rerun} reproduces split, weights and metrics" if a.rerun else "")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cropflow", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name, (run, args_fn, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        args_fn(sp)
        sp.set_defaults(run=run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        log.error("%s", err)
        return 1
    return 0

"""Whole-slide prediction: wall time and peak memory of each predict step against the number of tiles.

A new section without a spot table is predicted on a tile grid (`predict.grid_spacing_px`
224). This benchmark writes generated tiled TIFFs of about `--sizes` tiles (H&E-coloured
noise, written tile by tile, every tile counted as tissue: `predict.tissue_only: false`),
and runs the predict pipeline's steps on each with the ensemble of 4 fold models trained
on generated Visium sections (`benchmarks.scaling`'s generator, random features):

- read: the tile grid and the H&E thumbnail (`read_new_sections`);
- embedding: the encoder on a `--encoder-sample` of the slide's tiles with the project's
  windowed patch reader, time EXTRAPOLATED to every tile; its memory is that of the
  sample, which does not grow with the slide (patches are read window by window and
  embedded in batches of `embedding.batch_size`); the later steps use random features
  of the references' dimension in its place;
- references, graphs, predict (the 4 models and their mean and sd), write (the h5ad), maps
  (the interactive HTML).

Memory is the peak RSS growth over the step's start (sampled every 20 ms); a growth
exponent near 1 means memory proportional to the tiles (the per-tile outputs), never a
whole-slide image in memory.

    python -m benchmarks.predict_whole_slide --out benchmarks/results/predict_whole_slide.md
    python -m benchmarks.predict_whole_slide --quick
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks import common, scaling

GRID_PX = 224
STEPS = ("read", "embedding", "references", "graphs", "predict", "write", "maps")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3_000, 10_000, 30_000], help="tiles per slide")
    parser.add_argument("--reference-spots", type=int, default=1_000, help="spots of each of the 4 reference sections")
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--dim", type=int, default=1280, help="feature dimension (efficientnet_lite0's)")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--encoder-sample", type=int, default=256)
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR / "predict_whole_slide")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 and 1,200 tiles, 200-spot references")
    return parser.parse_args(argv)


def trained_references(args: argparse.Namespace) -> Any:
    """The catalog of 4 generated reference sections with random features and 4 trained fold models."""
    raw = scaling.generated_dataset(args.work_dir / "raw", args.reference_spots, 4, args.genes)
    params = {
        "dataset": "visium",
        "raw_dir": str(raw),
        "device": "cpu",
        "datasets": {"visium": {"gene_panel": {"rule": "list", "path": str(raw / "genes.txt")}}},
        "train": {"epochs": 2, "model": {"hidden": 64, "n_layers": 2}},
        "predict": {"tissue_only": False, "device": "cpu"},
    }
    root = args.work_dir / "runs" / common.digest({"params": params, "dim": args.dim})
    catalog = common.project_catalog(root, **params)
    if not catalog.exists("trained_models"):
        common.run_pipelines(catalog, "ingestion")
        sections = {s: load() for s, load in catalog.load("sections").items()}
        catalog.save("patch_embeddings", scaling.random_embeddings(sections, args.dim, 0))
        common.run_pipelines(catalog, "graph", "train")
    return catalog


def write_slide(folder: Path, tiles: int) -> Path:
    """A square tiled TIFF holding about `tiles` grid tiles (written once, reused)."""
    side = math.ceil(math.sqrt(tiles)) * GRID_PX
    path = folder / f"slide_{tiles}" / f"slide_{tiles}.tif"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        scaling.write_tiff(partial, side, side)
        partial.rename(path)
    return path


def measure_slide(catalog: Any, slide: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Each predict step on one slide: {step: StageMeasure}, the tile count and the output sizes."""
    import torch

    from spahgc_kedro.pipelines.predict import nodes

    params = catalog.load("params:predict")
    measures: dict[str, common.StageMeasure] = {}
    with common.measure() as m:
        new_sections = nodes.read_new_sections(str(slide.parent), params)
    measures["read"] = m
    (section_id,) = new_sections
    section = new_sections[section_id]
    device = torch.device("cpu")
    embedding = catalog.load("params:embedding")
    with common.measure() as sample:
        seconds, n, _ = scaling.time_encoder_sample(
            section, args.encoder, device, args.encoder_sample, False, embedding, None
        )
    measures["embedding"] = common.StageMeasure(
        seconds=seconds / n * section.n_obs,
        rss_before_mib=sample.rss_before_mib,
        peak_rss_mib=sample.peak_rss_mib,
        notes=[f"{args.encoder}: time EXTRAPOLATED from {n} tiles, memory of the sample"],
    )
    new_embeddings = scaling.random_embeddings(new_sections, args.dim, 1)
    trained = catalog.load("trained_models")
    folds = catalog.load("folds")
    with common.measure() as m:
        model_folds = nodes.choose_model_folds(trained, folds, params)
        references = nodes.fit_model_references(
            catalog.load("sections"),
            catalog.load("patch_embeddings"),
            folds,
            catalog.load("target_scaling"),
            model_folds,
            catalog.load("params:graph"),
        )
    measures["references"] = m
    preset = catalog.load("params:datasets")["visium"]
    with common.measure() as m:
        graphs = nodes.build_new_section_graphs(new_sections, new_embeddings, references, preset)
    measures["graphs"] = m
    with common.measure() as m:
        predictions = nodes.predict_new_sections(
            trained, references, graphs, new_sections, params, "visium", args.encoder
        )
    measures["predict"] = m
    del graphs
    with common.measure() as m:
        catalog.save("new_predictions", predictions)
    measures["write"] = m
    with common.measure() as m:
        maps = nodes.plot_new_prediction_maps(predictions, params)
        catalog.save("new_prediction_maps", maps)
    measures["maps"] = m
    out = catalog.load("new_predictions")[section_id]()
    return {"tiles": section.n_obs, "measures": measures, "models": len(model_folds), "genes": out.n_vars}


def slide_in_fresh_process(args: argparse.Namespace, slide: Path) -> dict[str, Any]:
    """`measure_slide` in a worker process of its own (the trained references are reused from disk)."""
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    return measure_slide(trained_references(args), slide, args)


def render(rows: list[dict[str, Any]], header: list[str]) -> str:
    """The markdown table: seconds and peak RSS growth (MiB) per step and slide, then the growth exponents."""
    lines = [
        *header,
        "",
        "| tiles | " + " | ".join(f"{step} s (MiB)" for step in STEPS) + " | total s | peak RSS MiB |",
        "|---" * (len(STEPS) + 3) + "|",
    ]
    for row in rows:
        m = row["measures"]
        cells = [
            f"{m[step].seconds:.1f}{' (extrap.)' if step == 'embedding' else ''} ({m[step].peak_growth_mib:.0f})"
            for step in STEPS
        ]
        peak = max(m[step].peak_rss_mib for step in STEPS)
        lines.append(
            f"| {row['tiles']} | " + " | ".join(cells) + f" | {sum(m[s].seconds for s in STEPS):.0f} | {peak:.0f} |"
        )
    if len(rows) >= 2:
        tiles = [row["tiles"] for row in rows]
        slopes = [common.log_log_slope(tiles, [r["measures"][s].peak_growth_mib for r in rows]) for s in STEPS]
        times = [common.log_log_slope(tiles, [r["measures"][s].seconds for r in rows]) for s in STEPS]
        lines.append(
            "| growth exponent: time / memory | "
            + " | ".join(f"{t:.2f} / {s:.2f}" for t, s in zip(times, slopes, strict=True))
            + " | | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """Train the reference models once, predict each slide size, print (and optionally write) the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.quick:
        args.sizes, args.reference_spots, args.genes, args.encoder_sample = [300, 1_200], 200, 50, 32
    start, load = time.perf_counter(), os.getloadavg()[0]
    catalog = trained_references(args)
    del catalog
    rows = []
    for tiles in args.sizes:
        slide = write_slide(args.work_dir / "slides", tiles)
        # a fresh process per slide: memory freed by an earlier slide would hide this one's growth
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(slide_in_fresh_process, args, slide).result())
        print(f"{rows[-1]['tiles']} tiles done", flush=True)
    first = rows[0]
    header = [
        "### Whole-slide prediction: time and memory per step"
        + (" (quick smoke run, not a result)" if args.quick else ""),
        "",
        f"- slides: generated square tiled TIFFs (H&E-coloured noise), a {GRID_PX} px tile grid, every tile kept "
        "(`predict.tissue_only: false`); one slide per row",
        f"- models: the ensemble of {first['models']} fold models (leave-one-section-out over 4 generated Visium "
        f"sections of {args.reference_spots} spots, {first['genes']} genes, {args.dim}-d random features, 2 epochs, "
        "hidden 64, 2 layers): speed and memory only, not accuracy",
        f"- embedding: {args.encoder} on {args.encoder_sample} tiles of each slide through the project's windowed patch "
        "reader, time EXTRAPOLATED to all tiles; memory = the sample's peak growth (the reader never holds the slide)",
        "- memory: peak RSS growth over the step's start, MiB, sampled every 20 ms, each slide in a fresh process "
        "(peak RSS MiB: the process's highest); growth exponent = log-log slope over the rows (1 = proportional to "
        "the tiles)",
        f"- machine: {common.machine_line('cpu')}; 1-minute load average {load:.1f} at the start (times stretch "
        "when it exceeds the cores; memory does not)",
        f"- wall time: {time.perf_counter() - start:.0f} s in all",
    ]
    table = render(rows, header)
    common.write_table(table, args.out)
    return table


if __name__ == "__main__":
    main()

"""Every stage on Visium HD-size sections (CPU): time and peak RSS at 16 um (~100k bins) and 8 um (~400k bins).

The data is the project's generated Visium HD-like dataset (`spahgc_kedro.demo_hd`: Space Ranger 3
binned outputs over a tiled pyramidal TIFF; 16 um bins pool 2 x 2 of the 8 um ones), read by the
`visium_hd` reader. Each stage runs as `kedro run --pipeline=<stage>` runs it, for one fold
(`graph.fold` = the first section; leave-one-section-out: one test, one validation section, the
rest train), each in a fresh process, with peak RSS sampled every 20 ms:

- ingestion: MEASURED (the reader and the ingestion pipeline, every section);
- embedding: ESTIMATED: the default encoder (efficientnet_lite0) with the project's patch reader
  timed on `--sample` bins of the first section, scaled to every bin of every section; random
  `--dim`-d features then stand in for its output;
- retrieval (the graph stage's two exact L1 searches): ESTIMATED: the project's blocked search
  timed for `--retrieval-sample` query bins against a whole section, scaled by distance terms
  (query x candidate x width) to every section pair the fold retrieves across and to each graph's
  reference-close-reference kNN over its reference spots (the search is linear in those terms);
- graph (links, spatial edges, the graph store): MEASURED, with random neighbours in place of
  both searches;
- one training epoch (spatial tiles of `train.max_full_graph_spots` bins, validation in chunks)
  and the test section's prediction (`prediction_chunk_spots`): MEASURED.

Above `--graph-max-bins` bins per section the graph stage is not run (it holds whole sections'
features in memory: see its row at the smaller size); a store written from generated parts (the
same random features, the sections' real expression and spatial edges, random links) stands in
for its output so the training epoch and the prediction are still measured (`--tiles-8um N`: at
8 um only the epoch's first N tile steps run, with the whole validation pass; peak RSS measured,
the epoch's time estimated from the mean step). Each stage's row is
kept in `--work-dir`; `--reuse` takes the rows (and outputs) a previous run left there.

    python -m benchmarks.visium_hd_scaling --tiles-8um 16 --out benchmarks/results/visium_hd_scaling.md
"""

from __future__ import annotations

import argparse
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

# in run order: retrieval is timed on the folds and stand-in features the graph stage reads
STAGES = ("ingestion", "embedding", "graph", "retrieval", "train", "predict")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=400_000, help="8 um bins per section (16 um: a quarter)")
    parser.add_argument(
        "--sections", type=int, default=4, help="sections (one fold: 1 test, 1 validation, the rest train)"
    )
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--dim", type=int, default=1024, help="embedding width (UNI: 1024)")
    parser.add_argument("--bin-um", type=int, nargs="+", default=[16, 8], help="bin sizes to run")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument(
        "--stages-8um", nargs="+", default=None, choices=STAGES, help="stages at 8 um (default: --stages)"
    )
    parser.add_argument("--tile", type=int, default=10_000, help="train.max_full_graph_spots (the project's default)")
    parser.add_argument("--chunk", type=int, default=10_000, help="prediction_chunk_spots")
    parser.add_argument("--sample", type=int, default=256, help="bins embedded to time the encoder")
    parser.add_argument("--retrieval-sample", type=int, default=256, help="query bins timed for retrieval")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in training")
    parser.add_argument(
        "--graph-max-bins",
        type=int,
        default=500_000,
        help="bins per section above which the graph stage is not run (it holds whole sections) and a store "
        "written from generated parts stands in for its output",
    )
    parser.add_argument(
        "--tiles-8um", type=int, default=0, help="at 8 um, train this many tile steps and estimate the epoch (0: all)"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse stage rows a previous run left in --work-dir")
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR / "visium_hd")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def dataset(args: argparse.Namespace) -> Path:
    """The generated dataset for `args` (written once per size, reused)."""
    from spahgc_kedro.demo_hd import generate_visium_hd

    raw = args.work_dir / f"raw_{args.bins}_{args.sections}_{args.genes}"
    if not (raw / "genes.txt").exists():
        shutil.rmtree(raw, ignore_errors=True)
        generate_visium_hd(raw, args.bins, args.genes, tuple(f"HD{i + 1}" for i in range(args.sections)))
    return raw


def stage_params(raw: Path, bin_um: int, args: argparse.Namespace) -> dict[str, Any]:
    """Runtime parameters: dataset visium_hd at `bin_um`, the generated genes, one fold, one epoch."""
    return {
        "dataset": "visium_hd",
        "raw_dir": str(raw),
        "datasets": {
            "visium_hd": {
                "reader_options": {"bin_um": bin_um},
                "gene_panel": {"rule": "list", "path": str(raw / "genes.txt")},
            }
        },
        "graph": {"fold": "HD1"},
        # resume false: a stored model from an earlier run of unchanged code would be reused, not timed
        "train": {"epochs": 1, "threads": args.threads, "max_full_graph_spots": args.tile, "resume": False},
        "prediction_chunk_spots": args.chunk,
    }


def run_slice(catalog: Any, name: str, **slicing: Any) -> common.StageMeasure:
    """Run registered pipeline `name` (sliced by `Pipeline.only_nodes`/`to_outputs` arguments) and measure it."""
    from kedro.framework.project import pipelines
    from kedro.runner import SequentialRunner

    pipeline = pipelines[name]
    if "nodes" in slicing:
        pipeline = pipeline.only_nodes(*slicing["nodes"])
    if "outputs" in slicing:
        pipeline = pipeline.to_outputs(*slicing["outputs"])
    with common.measure() as m:
        SequentialRunner().run(pipeline, catalog)
    return m


def random_neighbours(
    queries: np.ndarray, candidates: np.ndarray, k: int, *_: Any, exclude_self: bool = False, **__: Any
):
    """`graph.nearest_neighbours`'s output with k random candidates per query (a stand-in for the L1 search)."""
    rng = np.random.default_rng(queries.shape[0])
    n, m = queries.shape[0], candidates.shape[0]
    if exclude_self:
        indices = (np.arange(n)[:, None] + 1 + rng.integers(0, m - 1, (n, k))) % m
    else:
        indices = rng.integers(0, m, (n, k))
    return np.sort(rng.random((n, k)), axis=1), indices


def search_terms(
    pairs: list[tuple[str, str]], spots: dict[str, int], references: list[int], dim: int, n_genes: int
) -> dict[str, float]:
    """Distance terms (query x candidate x width) of a fold's two exact searches: the cross-section retrieval
    over `pairs` of sections of `spots` spots, and each graph's reference-close-reference kNN over its
    `references` reference spots (in embedding || expression space)."""
    return {
        "pairs": len(pairs),
        "graphs": len(references),
        "cross_section": float(sum(spots[q] * spots[c] for q, c in pairs)) * dim,
        "close": float(sum(m * m for m in references)) * (dim + n_genes),
    }


def search_work(catalog: Any, dim: int) -> dict[str, float]:
    """`search_terms` of the fold the catalog's graph stage built."""
    from spahgc_kedro.graph import retrieval_pairs

    folds, graphs = catalog.load("folds"), catalog.load("section_graphs")
    spots = {s: graphs.section(s)["embedding"].shape[0] for s in graphs.sections()}
    n_genes = len(catalog.load("target_scaling")[next(iter(folds["folds"]))]["genes"])
    references = [graphs.links(*key.split("/"))["spot_index"].shape[0] for key in graphs]
    return search_terms(retrieval_pairs(folds), spots, references, dim, n_genes)


def random_links(
    candidates: list[str], sizes: np.ndarray, n_spots: int, k_refer: int, k_close: int, rng: np.random.Generator
) -> dict[str, Any]:
    """`FoldReferences.links`'s output with random choices: k_refer retrieved spots per target spot among the
    `candidates` sections (of `sizes` spots) and k_close close references per retrieved reference spot."""
    picked_section = rng.integers(0, len(candidates), (n_spots, k_refer))
    picked_spot = (rng.random((n_spots, k_refer)) * sizes[picked_section]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    unique, refer_source = np.unique(offsets[picked_section] + picked_spot, return_inverse=True)
    section_index = np.searchsorted(offsets, unique, side="right") - 1
    n_references = unique.shape[0]
    close = np.arange(n_references)[:, None] + 1 + rng.integers(0, n_references - 1, (n_references, k_close))
    return {
        "reference_sections": candidates,
        "section_index": section_index,
        "spot_index": unique - offsets[section_index],
        "refer_source": refer_source.reshape(n_spots, k_refer),
        "close_edges": np.vstack([close.ravel() % n_references, np.repeat(np.arange(n_references), k_close)]),
    }


def generated_store(catalog: Any, args: argparse.Namespace) -> Any:
    """The graph stage's output without the graph stage: the fold plan and target scaling from the project's
    nodes, random `--dim`-d embeddings (standardisation 0/1), the sections' real expression and spatial edges,
    and k random retrieved spots and close references per node; every part made when the store writes it."""
    from spahgc_kedro.graph import graph_preset, spatial_edges
    from spahgc_kedro.graph_store import SectionGraphs, panel_union
    from spahgc_kedro.targets import transformed_expression

    run_slice(catalog, "graph", outputs=["folds", "target_scaling"])
    folds, scaling, graph = catalog.load("folds"), catalog.load("target_scaling"), catalog.load("params:graph")
    preset = graph_preset(
        catalog.load("section_manifest"), catalog.load("params:datasets"), catalog.load("params:dataset")
    )
    sections = catalog.load("sections")
    genes = panel_union(scaling)
    order = list(sections)
    n_obs = {section_id: load().n_obs for section_id, load in sections.items()}

    def section(section_id: str) -> dict[str, Any]:
        adata = sections[section_id]()
        spacing = float(adata.uns["spot_spacing_px"])
        positions = np.asarray(adata.obsm["spatial"], dtype=np.float64)
        rng = np.random.default_rng(order.index(section_id))
        return {
            "embedding": rng.standard_normal((adata.n_obs, args.dim), dtype=np.float32),
            "expression": transformed_expression(adata, genes, graph["target_transform"]),
            "positions": positions,
            "near_edges": spatial_edges(
                positions, float(preset["spatial_radius_spacings"]) * spacing, graph["max_spatial_neighbours"]
            ),
            "spot_ids": list(adata.obs_names),
        }

    def fold(name: str) -> dict[str, Any]:
        fold_scaling = scaling[name]
        return {
            "mean": np.zeros(args.dim, dtype=np.float32),
            "std": np.ones(args.dim, dtype=np.float32),
            "genes": list(fold_scaling["genes"]),
            "min": np.asarray(fold_scaling["min"], dtype=np.float32),
            "max": np.asarray(fold_scaling["max"], dtype=np.float32),
            "transform": fold_scaling["transform"],
        }

    def links(name: str, section_id: str) -> dict[str, Any]:
        candidates = [c for c in folds["folds"][name]["train"] if c != section_id]
        sizes = np.array([n_obs[c] for c in candidates])
        rng = np.random.default_rng([order.index(section_id), len(name)])
        return random_links(candidates, sizes, n_obs[section_id], graph["k_refer"], graph["k_close"], rng)

    return SectionGraphs(folds["folds"], genes, section, fold, links)


def truncated_epoch(catalog: Any, tiles: int) -> dict[str, Any]:
    """The train stage with only the first `tiles` optimiser steps of the epoch (the validation pass whole): peak
    RSS measured; the full epoch's time estimated as the measured stage plus the steps left at the mean step time
    (a step: from reading its tile to the next tile, or to the validation pass)."""
    import time

    from spahgc_kedro.model import training

    counts, marks = {}, []
    all_steps, step_graph, validate = training.training_steps, training._step_graph, training._validate

    def first_steps(graphs: list, max_spots: int) -> list:
        counts["all"] = len(found := all_steps(graphs, max_spots))
        return found[:tiles]

    def marked_step(*step_args: Any) -> Any:
        marks.append(time.perf_counter())
        return step_graph(*step_args)

    def marked_validation(*validate_args: Any) -> Any:
        marks.append(time.perf_counter())
        return validate(*validate_args)

    training.training_steps, training._step_graph, training._validate = first_steps, marked_step, marked_validation
    m = run_slice(catalog, "train", outputs=["trained_models"])
    step_s = float(np.mean(np.diff(marks)))
    return {
        "truncated": m,
        "steps": counts["all"],
        "run": len(marks) - 1,
        "step_s": step_s,
        "seconds": m.seconds + (counts["all"] - len(marks) + 1) * step_s,
    }


def measure_stage(stage: str, root: Path, params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One stage in this (fresh) process: seconds, peak RSS and what was measured or estimated."""
    import torch

    from benchmarks.scaling import random_embeddings, time_encoder_sample

    catalog = common.project_catalog(root, **params)
    if stage == "ingestion":
        m = run_slice(catalog, "ingestion")
        sections = catalog.load("sections")
        return {"measure": m, "bins": int(sum(load().n_obs for load in sections.values()))}
    if stage == "embedding":
        sections = {s: load() for s, load in catalog.load("sections").items()}
        first = next(iter(sections.values()))
        torch.set_num_threads(args.threads)
        seconds, patches, _ = time_encoder_sample(
            first, "efficientnet_lite0", torch.device("cpu"), args.sample, False, catalog.load("params:embedding"), 0
        )
        if first.n_obs <= args.graph_max_bins:
            catalog.save("patch_embeddings", random_embeddings(sections, args.dim, 0))
        total = sum(s.n_obs for s in sections.values())
        return {"seconds": seconds / patches * total, "rate": patches / seconds, "sampled": patches}
    if stage == "retrieval":
        from spahgc_kedro.graph import nearest_neighbours

        graph, work = catalog.load("params:graph"), search_work(catalog, args.dim)
        sections = catalog.load("section_graphs")
        first, second = sections.sections()[:2]
        queries = np.asarray(sections.section(first)["embedding"][: args.retrieval_sample])
        candidates = np.asarray(sections.section(second)["embedding"])
        nearest_neighbours(queries[:8], candidates[:64], graph["k_refer"], graph["metric"])  # warm-up
        with common.measure() as m:
            nearest_neighbours(queries, candidates, graph["k_refer"], graph["metric"], graph["block_size"])
        per_term = m.seconds / (queries.shape[0] * candidates.shape[0] * args.dim)
        return {
            "seconds": per_term * (work["cross_section"] + work["close"]),
            "cross_section_s": per_term * work["cross_section"],
            "sample_rss": m.peak_rss_mib,
            **work,
        }
    if stage == "graph" and next(iter(catalog.load("sections").values()))().n_obs > args.graph_max_bins:
        with common.measure() as m:
            catalog.save("section_graphs", generated_store(catalog, args))
        store = next(root.rglob("section_graphs"))
        mib = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20
        return {"stand_in": m, "store_mib": mib}
    if stage == "graph":
        import spahgc_kedro.graph as graph_module

        graph_module.nearest_neighbours = random_neighbours
        m = run_slice(catalog, "graph")
        store = next(root.rglob("section_graphs"))
        return {"measure": m, "store_mib": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20}
    if stage == "train":
        tiles = args.tiles_8um if params["datasets"]["visium_hd"]["reader_options"]["bin_um"] == 8 else 0
        if not tiles:
            return {"measure": run_slice(catalog, "train", outputs=["trained_models"])}
        return truncated_epoch(catalog, tiles)
    return {"measure": run_slice(catalog, "train", nodes=["train.predict_test_sections"])}


def measure_size(raw: Path, bin_um: int, args: argparse.Namespace) -> dict[str, Any]:
    """The chosen stages at one bin size, in order, each in a fresh process (a stage reads what earlier ones wrote;
    ingestion starts from empty outputs)."""
    root = args.work_dir / f"run_{bin_um}um"
    params = stage_params(raw, bin_um, args)
    rows: dict[str, Any] = {}
    chosen = args.stages_8um if bin_um == 8 and args.stages_8um else args.stages
    if "ingestion" in chosen and not args.reuse:
        shutil.rmtree(root, ignore_errors=True)
    for stage in (s for s in STAGES if s in chosen):
        cached = root / "rows" / f"{stage}.pkl"
        if args.reuse and cached.exists():
            rows[stage] = pickle.loads(cached.read_bytes())
        else:
            rows[stage] = common.in_fresh_process(measure_stage, stage, root, params, args)
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pickle.dumps(rows[stage]))
        print(f"{bin_um} um {stage}: {rows[stage]}", flush=True)
    return rows


def stage_row(stage: str, row: dict[str, Any] | None) -> tuple[str, str, str, str]:
    """(seconds, peak RSS MiB, peak anonymous RSS MiB, how) of one stage's row."""
    if row is None:
        return "not run", "", "", ""
    if "measure" in row:
        m = row["measure"]
        return f"{m.seconds:,.1f}", f"{m.peak_rss_mib:,.0f}", f"{m.peak_anonymous_mib:,.0f}", "MEASURED"
    if "truncated" in row:
        m = row["truncated"]
        how = (
            f"peak RSS MEASURED over {row['run']} of {row['steps']} tile steps and the whole validation pass; time "
            f"ESTIMATED: that run ({m.seconds:,.0f} s) + the other steps at {row['step_s']:.1f} s each"
        )
        return f"{row['seconds']:,.0f}", f"{m.peak_rss_mib:,.0f}", f"{m.peak_anonymous_mib:,.0f}", how
    if "stand_in" in row:
        m = row["stand_in"]
        how = (
            f"NOT RUN (holds whole sections in memory); a store of generated parts stands in ({m.seconds:,.0f} s, "
            f"{m.peak_rss_mib:,.0f} MiB peak, {row['store_mib']:,.0f} MiB on disk)"
        )
        return "not run", "", "", how
    if stage == "embedding":
        how = f"ESTIMATED from {row['sampled']} bins at {row['rate']:.1f} patches/s"
        return f"{row['seconds']:,.0f}", "", "", how
    how = (
        f"ESTIMATED: L1 search timed on a sample, scaled to {row['pairs']} section pairs "
        f"({row['cross_section_s']:,.0f} s) and {row['graphs']} graphs' reference kNN (sample's peak RSS "
        f"{row['sample_rss']:,.0f} MiB)"
    )
    return f"{row['seconds']:,.0f}", "", "", how


def report(results: dict[int, dict[str, Any]], args: argparse.Namespace) -> str:
    """The table: a row per stage, a column group per bin size, growth exponents where both sizes ran."""
    from spahgc_kedro.demo_hd import BIN_UM, lattice_side

    sizes = sorted(results, reverse=True)
    bins = {b: (lattice_side(args.bins) * BIN_UM // b) ** 2 for b in sizes}
    width = " (UNI's width)" if args.dim == 1024 else ""
    lines = [
        "### Every stage on Visium HD-size sections (CPU)",
        "",
        f"- data: {args.sections} sections generated by `spahgc_kedro.demo_hd` ({args.bins:,} 8 um bins requested per "
        f"section; 16 um bins pool 2 x 2 of them), {args.genes} genes (all in the panel), log10 targets, read by the "
        "`visium_hd` reader",
        f"- fold: one (`graph.fold` = HD1: test HD1, validation HD2, train the other {args.sections - 2}); "
        f"k_refer 7, k_close 3, L1 retrieval; random {args.dim}-d features{width} in place of the encoder",
        f"- model: default architecture (hidden 256, 4 layers, 4 heads, contrastive branch); one epoch, "
        f"`train.max_full_graph_spots` {args.tile:,} (spatial tiles), `prediction_chunk_spots` {args.chunk:,}",
        "- each stage in a fresh process; peak RSS = the process's peak during the stage, sampled every 20 ms "
        "(the model and graphs it loads included); peak anonymous = its peak without mapped files (the graph store's "
        "sections are memory-mapped: their pages count in RSS but are the kernel's file cache, dropped under memory "
        "pressure and read again)",
        "- graph: MEASURED with random neighbours in place of its two L1 searches (cross-section retrieval, "
        "reference kNN); those searches, and the embedding, are ESTIMATED from timed samples (see the rows)",
        f"- machine: {common.cpu_model()}; torch {args.threads} threads in training",
        "",
        "| stage | "
        + " | ".join(
            f"{b} um: {bins[b]:,} bins per section: s | peak RSS (MiB) | peak anonymous (MiB) | how" for b in sizes
        )
        + " |",
        "|---|" + "---|---|---|---|" * len(sizes),
    ]
    for stage in STAGES:
        if any(stage in results[b] for b in sizes):
            cells = (" | ".join(stage_row(stage, results[b].get(stage))) for b in sizes)
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    if len(sizes) == 2:
        small, large = sorted(sizes, reverse=True)
        exponents = []
        for stage in STAGES:
            cells = [stage_row(stage, results[b].get(stage))[0].replace(",", "") for b in (small, large)]
            if all(cell.replace(".", "", 1).isdigit() for cell in cells):
                slope = common.log_log_slope([bins[small], bins[large]], [float(cell) for cell in cells])
                exponents.append(f"{stage} {slope:.2f}")
        lines += ["", "Growth exponents of time with bins per section: " + ", ".join(exponents) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    raw = dataset(args)
    results = {bin_um: measure_size(raw, bin_um, args) for bin_um in args.bin_um}
    table = report(results, args)
    print(table)
    common.write_table(table, args.out)
    return table


if __name__ == "__main__":
    main()

"""Time and peak memory of the evaluation stage on large sections (default 4 x 50,000 spots).

The evaluation pipeline (SpaHGC's metrics, the baselines ridge_pca, depth_rank1, knn_l1 and
train_mean, the summary, the figure) runs through the project's catalog on stored inputs in the
graph and train stages' contracts: leave-one-section-out folds (validation = the next section,
train = the other two), one section graph per fold and section (`target.x` raw `dim`-d
embeddings, `target.y` min-max targets, `reference.x` = [embedding || expression] of the
retrieved training spots, `refer` edges k per spot), and one prediction per fold. The inputs
are generated, with random retrieval (k uniform picks from the fold's training spots: every
training spot ends up a reference node, the largest graphs the contract allows); what the
evaluation costs does not depend on which spots were retrieved.

    python -m benchmarks.evaluation_scaling --out benchmarks/results/evaluation_scaling.md
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spots", type=int, nargs="+", default=[50_000], help="spots per section")
    parser.add_argument("--sections", type=int, default=4)
    parser.add_argument("--genes", type=int, default=785)
    parser.add_argument("--dim", type=int, default=1024, help="embedding width (UNI: 1024)")
    parser.add_argument("--k", type=int, default=7, help="retrieved spots per spot (graph.k_refer)")
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR / "evaluation_scaling")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def section_data(n_spots: int, args, seed: int) -> dict[str, np.ndarray]:
    """Embeddings, min-max targets that depend on them, and positions of one generated section."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_spots, args.dim)).astype(np.float32)
    mixing = np.random.default_rng(12345).normal(size=(args.dim, args.genes)).astype(np.float32) / args.dim**0.5
    signal = 1 / (1 + np.exp(-(x @ mixing)))
    y = np.clip(signal + 0.1 * rng.normal(size=signal.shape), 0, 1).astype(np.float32)
    side = int(np.ceil(n_spots**0.5))
    pos = np.stack([np.arange(n_spots) % side, np.arange(n_spots) // side], axis=1).astype(np.float32) * 100
    return {"x": x, "y": y, "pos": pos, "spots": [f"spot{i}" for i in range(n_spots)]}


def fold_plan(names: list[str]) -> dict[str, Any]:
    """Leave-one-section-out; validation = the next section in order, train = the others."""
    folds = {}
    for i, test in enumerate(names):
        validation = names[(i + 1) % len(names)]
        folds[test] = {
            "test": [test],
            "validation": [validation],
            "train": [n for n in names if n not in (test, validation)],
        }
    return {"scheme": "leave_one_section_out", "folds": folds}


def section_graphs(sections: dict[str, dict], plans: dict[str, dict], args) -> Any:
    """The sections' graphs in the graph stage's contract, with k random retrieved spots of the fold's pool per spot.

    Built from parts as the graph stage's store keeps them: each section once, per fold only the links.
    """
    from spahgc_kedro.graph_store import SectionGraphs

    genes = [f"G{g}" for g in range(args.genes)]
    seeds = {(fold, name): 100 * i + j for i, fold in enumerate(plans) for j, name in enumerate(sections)}

    def section(name: str) -> dict[str, Any]:
        data = sections[name]
        empty = np.empty((2, 0), dtype=np.int64)
        return {
            "embedding": data["x"],
            "expression": data["y"],
            "positions": data["pos"],
            "near_edges": empty,
            "spot_ids": data["spots"],
        }

    def fold(name: str) -> dict[str, Any]:
        # identity standardisation and scaling: the generated targets are already in [0, 1]
        return {
            "mean": np.zeros(args.dim, np.float32),
            "std": np.ones(args.dim, np.float32),
            "genes": genes,
            "min": np.zeros(args.genes, np.float32),
            "max": np.ones(args.genes, np.float32),
            "transform": "log10",
        }

    def links(fold: str, name: str) -> dict[str, Any]:
        pool = [s for s in plans[fold]["train"] if s != name] or plans[fold]["train"]
        sizes = np.array([len(sections[s]["x"]) for s in pool])
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        picks = np.random.default_rng(seeds[(fold, name)]).integers(
            0, offsets[-1], size=(len(sections[name]["x"]), args.k)
        )
        used, rows = np.unique(picks, return_inverse=True)
        section_index = np.searchsorted(offsets, used, side="right") - 1
        return {
            "reference_sections": pool,
            "section_index": section_index,
            "spot_index": used - offsets[section_index],
            "refer_source": rows.reshape(picks.shape),
            "close_edges": np.empty((2, 0), dtype=np.int64),
        }

    return SectionGraphs(plans, genes, section, fold, links)


def prediction(sections: dict[str, dict], test: str, fold: str, args) -> Any:
    """SpaHGC's prediction of a test section as the train stage stores it (a noisy copy of the targets)."""
    import anndata as ad

    measured = sections[test]["y"]
    noisy = measured + 0.3 * np.random.default_rng(7).normal(size=measured.shape).astype(np.float32)
    adata = ad.AnnData(X=noisy, layers={"measured": measured, "log_expression": noisy})
    adata.obs_names = list(sections[test]["spots"])
    adata.var_names = [f"G{g}" for g in range(args.genes)]
    adata.obsm["spatial"] = sections[test]["pos"]
    adata.uns.update(
        fold=fold,
        section_id=test,
        dataset="generated",
        encoder=f"random {args.dim}-d",
        fold_scheme="leave_one_section_out",
        target_transform="log10(count+1), min-max",
        best_epoch=1,
        mlflow_run_id="",
    )
    return adata


def measure_evaluation(n_spots: int, args, warm_up: bool = True) -> dict[str, Any]:
    """Store one size's inputs, then time the evaluation pipeline on them (after an untimed small run)."""
    if warm_up:
        measure_evaluation(200, args, warm_up=False)
    root = args.work_dir / f"{n_spots}"
    shutil.rmtree(root, ignore_errors=True)
    catalog = common.project_catalog(root)
    names = [f"S{i}" for i in range(args.sections)]
    sections = {name: section_data(n_spots, args, seed) for seed, name in enumerate(names)}
    plan = fold_plan(names)
    catalog.save("folds", plan)
    catalog.save("section_graphs", section_graphs(sections, plan["folds"], args))
    catalog.save("predictions", {fold: prediction(sections, fold, fold, args) for fold in plan["folds"]})
    stored_mib = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "section_graphs" in p.parts) / 2**20
    sections.clear()  # the stage reads everything from disk
    with common.measure() as m:
        common.run_pipelines(catalog, "evaluation")
    shutil.rmtree(root, ignore_errors=True)
    return {"spots": n_spots, "measure": m, "stored_mib": stored_mib}


def report(rows: list[dict[str, Any]], args) -> str:
    """The table: seconds and peak RSS growth of the evaluation stage per size, with the growth exponent."""
    width = " (UNI's width)" if args.dim == 1024 else ""
    lines = [
        "### Evaluation stage on large sections (CPU)",
        "",
        f"- data: {args.sections} generated sections per size, {args.genes} genes, random {args.dim}-d embeddings"
        f"{width}, k = {args.k} retrieved spots per spot drawn at random from the fold's training spots "
        "(every training spot becomes a reference node: the largest graphs the contract allows)",
        f"- folds: leave-one-section-out, {args.sections} folds (validation = the next section, train = the other "
        f"{args.sections - 2}); one section graph per fold and section, assembled from the graph store on disk as the catalog keeps it (each section once, per fold only the links)",
        "- stage: the evaluation pipeline as `kedro run --pipeline=evaluation` runs it (SpaHGC's metrics, "
        "ridge_pca and depth_rank1 fitted on train + validation, knn_l1 from the test graphs' retrieval, "
        "train_mean, metrics with HEG/HVG-50, summary, figure); MEASURED, not extrapolated",
        "- memory: each size in a fresh process; peak RSS = the process's peak during the stage, growth = that "
        "peak minus RSS at the stage's start; sampled every 20 ms",
        f"- machine: {common.cpu_model()}",
        "",
        "| spots per section | section graphs on disk (MiB) | evaluation s | peak RSS (MiB) | growth (MiB) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["measure"]
        lines.append(
            f"| {row['spots']:,} | {row['stored_mib']:,.0f} | {m.seconds:.1f} | {m.peak_rss_mib:,.0f} "
            f"| {m.peak_growth_mib:,.0f} |"
        )
    if len(rows) > 1:
        sizes = [row["spots"] for row in rows]
        slope = common.log_log_slope(sizes, [row["measure"].seconds for row in rows])
        lines.append(f"| growth exponent (time) | | {slope:.2f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    # each size in a fresh process (its peak RSS not hidden by an earlier size's), after a warm-up there
    rows = [common.in_fresh_process(measure_evaluation, n, args) for n in args.spots]
    text = report(rows, args)
    common.write_table(text, args.out)
    return text


if __name__ == "__main__":
    main()

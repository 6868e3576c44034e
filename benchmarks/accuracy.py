"""Accuracy of SpaHGC, its ablations and the baselines on the same features, genes and folds.

Prints one markdown table (mean and spread over folds and over seeds of ACG, HEG-50,
HVG-50, pooled PCC and MSE), headed by what it measures; `--out` also writes it with the
published figures that frame it. Every stage is the project's own code: the readers,
the embedding node (EfficientNet-Lite0 by default, cached under --work-dir), the graph
nodes, `model.training.fit/predict`, `metrics` and the evaluation pipeline's baselines.
The best epoch is chosen on each fold's validation section, never on the test section.

    python benchmarks/accuracy.py --quick                      # smoke run, real HER2+ data
    python benchmarks/accuracy.py --seeds 0 --out benchmarks/results/accuracy_her2st.md
    python benchmarks/accuracy.py --dataset demo --quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from spahgc_kedro.metrics import finite_mean  # noqa: E402

# name -> TrainConfig changes from the project's `train` parameters
VARIANTS = {
    "SpaHGC (EMA teacher, default)": {},
    "no contrastive loss": {"use_contrastive": False},
    "no reference-reference edges": {"use_reference_edges": False},
    "no spatial edges": {"use_spatial_edges": False},
    "frozen teacher (reference code)": {"teacher": "frozen"},
}
# the method and the ablation the paper leads with: these get every --seeds
PRIMARY = ("SpaHGC (EMA teacher, default)", "no contrastive loss")
BASELINES = {
    "ridge_pca": "PCA 256 + ridge (HEST recipe)",
    "depth_rank1": "depth only (rank 1: predicted spot depth x gene lines)",
    "knn_l1": "L1 kNN retrieval, k = 7",
    "train_mean": "training mean",
}
METRICS = ("pcc_acg", "pcc_gene_specific", "pcc_heg50", "pcc_hvg50", "pcc_pooled", "mse")
HEADERS = ("ACG", "gene-specific PCC", "HEG-50", "HVG-50", "pooled PCC", "MSE")
# what changes a saved score besides the settings: the code that fits, predicts and scores
SCORED_CODE = ("model", "graph.py", "targets.py", "metrics.py", "baselines.py")
PUBLISHED = """\
Published figures that frame this table (other protocols and data sizes; not the same
folds, so not directly comparable): full 32-section HER2+ leave-one-section-out, mean
per-slide PCC over the 785 genes: Hist2ST 0.156, HGGEP 0.194, mclSTExp 0.232 (as
reported by those papers / the SpaHGC paper). Reference figures on these same 4 sections
and the same features (docs: datasets.md): ridge 0.136, PCA + ridge 0.176, L1 kNN 0.186
ACG; a minimal 2-layer heterogeneous GNN without contrastive loss about 0.24."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["her2st", "demo"], default="her2st")
    parser.add_argument(
        "--raw-dir", type=Path, default=None, help="default: ../shared/data/her2st, or the generated demo"
    )
    parser.add_argument("--gene-list", type=Path, default=common.HER2ST_GENES, help="her2st gene panel (.npy)")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--ablation-seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds for the ablations other than 'no contrastive loss' (default: --seeds); the table's seeds column says which",
    )
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads during fit (1 is fastest on busy shared cores)"
    )
    parser.add_argument("--variants", nargs="+", default=None, help="subset of variant names (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 3 epochs, 2 folds, hidden 64")
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR)
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) here")
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="fit nothing: tabulate the (variant, seed) scores earlier runs saved, listing what is missing",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="refit every variant and seed instead of reusing scores saved by earlier runs",
    )
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest, embed (cached) and build every fold's graphs with the project's nodes."""
    from spahgc_kedro.encoders import select_device

    work = args.work_dir / args.dataset
    if args.dataset == "demo":
        raw_dir = args.raw_dir or work / "raw"
        if not raw_dir.exists():
            from spahgc_kedro.demo import generate_demo

            generate_demo(raw_dir)
    else:
        raw_dir = args.raw_dir or common.HER2ST_RAW
    params = common.project_parameters(args.dataset, raw_dir)
    preset = {**params["datasets"][args.dataset], "name": args.dataset, "raw_dir": str(raw_dir)}
    if args.dataset == "her2st":
        preset["gene_panel"] = {"rule": "list", "path": str(args.gene_list)}
        params["datasets"]["her2st"]["gene_panel"] = preset["gene_panel"]
    device = str(select_device(args.device))
    sections, manifest = common.read_raw_sections(raw_dir, preset)
    embeddings = common.embed_with_cache(
        sections, args.encoder, device, int(params["seed"]), params["embedding"], work / "embeddings" / args.encoder
    )
    folds, scaling, graphs = common.build_graphs(sections, embeddings, manifest, params, args.dataset)
    if args.quick:
        folds = {**folds, "folds": dict(list(sorted(folds["folds"].items()))[:2])}
    return {
        "params": params,
        "device": device,
        "manifest": manifest,
        "folds": folds,
        "scaling": scaling,
        "graphs": graphs,
    }


def _role(graphs: dict[str, Any], folds: dict[str, Any], fold: str, role: str) -> list[Any]:
    from spahgc_kedro.pipelines.train.nodes import graphs_by_role

    return graphs_by_role(graphs, folds, fold, role)


def test_sections(prep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The evaluation pipeline's `gathered` form of each fold's test section (measured only)."""
    gathered = {}
    for fold in sorted(prep["folds"]["folds"]):
        for graph in _role(prep["graphs"], prep["folds"], fold, "test"):
            key = fold if graph.section_id == fold else f"{fold}-{graph.section_id}"
            gathered[key] = {
                "fold": fold,
                "section_id": graph.section_id,
                "genes": list(graph.genes),
                "spot_ids": [str(s) for s in graph.spot_ids],
                "measured": graph["target"].y.numpy(),
                "graph": graph,
            }
    return gathered


def score(gathered: dict[str, dict[str, Any]], predicted: dict[str, np.ndarray], n_top: int) -> dict[str, Any]:
    """Per-test-section metrics and the pooled PCC over all folds, with the project's metric functions."""
    from spahgc_kedro.metrics import pooled_pcc, section_metrics

    per_fold = {key: section_metrics(info["measured"], predicted[key], n_top) for key, info in gathered.items()}
    keys = sorted(gathered)
    # pooled PCC needs one panel: the genes every fold shares (HVG panels differ by fold), as the evaluation pipeline does
    shared = sorted(set.intersection(*(set(gathered[k]["genes"]) for k in keys)))
    columns = {k: [gathered[k]["genes"].index(g) for g in shared] for k in keys}
    pooled, _ = pooled_pcc(
        [gathered[k]["measured"][:, columns[k]] for k in keys], [predicted[k][:, columns[k]] for k in keys]
    )
    return {"per_fold": per_fold, "pcc_pooled": pooled}


def run_variant(
    prep: dict[str, Any], gathered: dict[str, Any], changes: dict[str, Any], seed: int, args
) -> dict[str, Any]:
    """Fit one model per fold (best epoch by validation PCC) and predict its test section."""
    from spahgc_kedro.model.training import TrainConfig, build_model, fit, predict

    train = dict(prep["params"]["train"])
    config = TrainConfig(**{**train, "seed": seed, "device": prep["device"], "threads": args.threads})
    config = replace(config, epochs=args.epochs, **changes)
    if args.quick:
        config = replace(config, hidden=64, n_layers=2)
    predicted, best_epochs = {}, []
    for fold in sorted(prep["folds"]["folds"]):
        result = fit(
            _role(prep["graphs"], prep["folds"], fold, "train"),
            _role(prep["graphs"], prep["folds"], fold, "validation"),
            config,
            progress=False,
        )
        best_epochs.append(result.best_epoch)
        model = build_model(result.model_config)
        model.load_state_dict(result.state_dict)
        for key, info in gathered.items():
            if info["fold"] == fold:
                predicted[key] = predict(model, info["graph"], prep["device"])
    return {"predicted": predicted, "best_epochs": best_epochs}


def code_version() -> str:
    """Hash of the sources behind a score (SCORED_CODE), so a saved score from older code is never tabulated."""
    package = common.REPO / "src" / "spahgc_kedro"
    digest = hashlib.sha1()
    for entry in SCORED_CODE:
        for path in sorted((package / entry).rglob("*.py")) if (package / entry).is_dir() else [package / entry]:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def score_path(args, changes: dict[str, Any], seed: int, train: dict[str, Any]) -> Path:
    """Where one (variant, seed) score is saved: keyed on everything that changes the fit."""
    key = {
        "dataset": args.dataset,
        "raw_dir": str(args.raw_dir or ""),
        "gene_list": str(args.gene_list),
        "encoder": args.encoder,
        "device": args.device,
        "epochs": args.epochs,
        "quick": args.quick,
        "train": {k: v for k, v in train.items() if k != "threads"},
        "changes": changes,
        "seed": seed,
        "code": code_version(),
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return args.work_dir / args.dataset / "scores" / f"seed{seed}-{digest}.json"


def scored_variant(prep, gathered, changes: dict[str, Any], seed: int, args, n_top: int) -> dict[str, Any] | None:
    """One variant and seed: its scores, best epochs and fit time, reused from disk unless --fresh.

    Saving each (variant, seed) lets separate processes share one table: run disjoint
    `--variants`/`--seeds` in parallel, then a final run with all of them only renders.
    """
    path = score_path(args, changes, seed, prep["params"]["train"])
    if path.exists() and not args.fresh:
        return json.loads(path.read_text())
    if args.cached_only:
        return None
    start = time.perf_counter()
    result = run_variant(prep, gathered, changes, seed, args)
    record = {
        **score(gathered, result["predicted"], n_top),
        "best_epochs": [int(e) for e in result["best_epochs"]],
        "seconds": time.perf_counter() - start,
        "threads": args.threads,
        "seed": seed,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, default=float, indent=1))
    return record


def run_baselines(
    prep: dict[str, Any], gathered: dict[str, Any], seed: int
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """({baseline: {test key: prediction}}, {test key: oracle-depth reference}) from the evaluation node."""
    from spahgc_kedro.pipelines.evaluation.nodes import predict_baselines

    evaluation = prep["params"]["evaluation"]
    by_key, oracle = predict_baselines(prep["graphs"], prep["folds"], gathered, evaluation, seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, methods in by_key.items():
        for name, values in methods.items():
            out.setdefault(name, {})[key] = values
    return out, oracle


def spread(scores: list[dict[str, Any]], metric: str) -> tuple[float, float, float]:
    """(mean, sd over folds of the seed-mean, sd over seeds of the fold-mean); NaN-aware."""
    if metric == "pcc_pooled":
        values = np.array([s["pcc_pooled"] for s in scores], dtype=float)
        return finite_mean(values), float("nan"), _nanstd(values)
    keys = sorted(scores[0]["per_fold"])
    grid = np.array([[s["per_fold"][k][metric] for k in keys] for s in scores], dtype=float)  # seeds x folds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fold_means, seed_means = np.nanmean(grid, axis=0), np.nanmean(grid, axis=1)
    return finite_mean(grid.ravel()), _nanstd(fold_means), _nanstd(seed_means)


def _nanstd(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.std(ddof=1)) if finite.size > 1 else float("nan")


def _cell(mean: float, folds_sd: float, seeds_sd: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    parts = [f"{mean:.3f}"]
    if np.isfinite(folds_sd):
        parts.append(f"±{folds_sd:.3f}f")
    if np.isfinite(seeds_sd):
        parts.append(f"±{seeds_sd:.3f}s")
    return " ".join(parts)


def render(rows: list[dict[str, Any]], header: list[str]) -> str:
    """The markdown table: header lines, then one row per method."""
    lines = [
        *header,
        "",
        "| method | seeds | " + " | ".join(HEADERS) + " | best epochs | fit time per seed |",
        "|---" * (len(HEADERS) + 4) + "|",
    ]
    for row in rows:
        cells = [_cell(*spread(row["scores"], m)) for m in METRICS]
        seeds = ",".join(str(seed) for seed in row["seeds"])
        lines.append(
            f"| {row['name']} | {seeds} | " + " | ".join(cells) + f" | {row['best_epochs']} | {row['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def oracle_line(oracle_score: dict[str, Any]) -> str:
    """The oracle-depth reference line: a ceiling that uses the test sections' measurements, never a method."""
    cells = ", ".join(
        f"{header} {_cell(*spread([oracle_score], metric))}"
        for metric, header in zip(METRICS, HEADERS, strict=True)
        if metric not in ("pcc_pooled", "mse")
    )
    return (
        "Reference line, not a method: oracle depth (the test section's MEASURED spot depth through the training "
        f"spots' gene lines; the most a depth-only prediction can score): {cells}."
    )


def describe(prep: dict[str, Any], args, wall: float, gathered: dict[str, Any]) -> list[str]:
    """Header lines: data, genes, targets, folds, PCC conventions, encoder, machine, wall time."""
    sections = ", ".join(f"{s['section_id']} ({s['n_spots']} spots)" for s in prep["manifest"]["sections"])
    genes = sorted({len(info["genes"]) for info in gathered.values()})
    folds = "; ".join(
        f"{name}: test {f['test']}, validation {f['validation']}, train {f['train']}"
        for name, f in sorted(prep["folds"]["folds"].items())
    )
    train = prep["params"]["train"]
    hidden, layers = (64, 2) if args.quick else (train["hidden"], train["n_layers"])
    epochs = f"{args.epochs} epochs" + (" (QUICK: smaller model, 2 folds)" if args.quick else "")
    return [
        f"### Accuracy: {args.dataset}" + (" (quick smoke run, not a result)" if args.quick else ""),
        "",
        f"- data: {args.dataset}, sections {sections}",
        f"- genes: {'/'.join(map(str, genes))} ({'the 785-gene HER2+ list, genes present in every section' if args.dataset == 'her2st' else 'HVG intersection of the fold training sections'}); "
        f"target transform: {prep['params']['graph']['target_transform']} (log10(count + 1)), min-max scaled per gene with the fold's train+validation statistics",
        f"- folds: {prep['folds']['scheme']}, {len(prep['folds']['folds'])} folds ({folds}); SpaHGC trains on `train`, "
        "picks its epoch by validation PCC; baselines fit on train + validation",
        "- PCC conventions: ACG / HEG-50 / HVG-50 = per test section, Pearson per gene over its spots, mean over "
        "(all / 50 most expressed / 50 most variable measured) genes, then mean over folds; pooled PCC = Pearson per "
        "gene over all test spots of all folds concatenated (HEST-Benchmark), mean over genes; MSE on the min-max scaled targets",
        "- gene-specific PCC (docs/metrics.md): per test section and gene, the partial correlation of predicted and "
        "measured values given the measured spot depth (mean min-max target over the panel), mean over genes, then "
        "over folds; 0 for any prediction that only follows depth. Depth only = ridge-predicted depth through each "
        "gene's least-squares line on the training spots (fit on train + validation like every baseline)",
        "- spread: `±Xf` = sd over folds of the seed-averaged value, `±Xs` = sd over seeds of the fold-averaged value "
        "(pooled PCC: over seeds only); the seeds column lists each row's seeds",
        f"- encoder: {args.encoder} (frozen, ImageNet weights), 224 px centred patches; model: hidden {hidden}, "
        f"{layers} layers, {epochs}, lr {train['lr']}, torch threads {args.threads}",
        f"- machine: {common.machine_line(prep['device'])}",
        f"- wall time: {wall:.0f} s in all (prep + all fits)"
        if not args.cached_only
        else f"- wall time: {wall:.0f} s to tabulate; the fits ran earlier, possibly in parallel processes (per-seed fit time in the last column)",
    ]


def main(argv: list[str] | None = None) -> str:
    """Run every method and print (and optionally write) the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], min(args.epochs, 3)
    if args.dataset == "her2st":
        raw = args.raw_dir or common.HER2ST_RAW
        missing = [str(p) for p in (raw, args.gene_list) if not p.exists()]
        if missing:
            print(f"SKIPPED: the real HER2+ data is absent ({', '.join(missing)}); use --dataset demo or --raw-dir.")
            return ""
    start = time.perf_counter()
    prep = prepare(args)
    gathered = test_sections(prep)
    n_top = int(prep["params"]["evaluation"]["n_top_genes"])
    variants = {name: c for name, c in VARIANTS.items() if not args.variants or name in args.variants}
    rows, missing = [], []
    for name, changes in variants.items():
        scores, best, seconds = [], [], 0.0
        seeds = args.seeds if name in PRIMARY or args.ablation_seeds is None else args.ablation_seeds
        done = []
        for seed in seeds:
            record = scored_variant(prep, gathered, changes, seed, args, n_top)
            if record is None:
                missing.append(f"{name} seed {seed}")
                continue
            done.append(seed)
            scores.append(record)
            best.extend(record["best_epochs"])
            seconds += record["seconds"]
            print(
                f"{name}, seed {seed}: ACG {np.mean([v['pcc_acg'] for v in record['per_fold'].values()]):.3f}",
                flush=True,
            )
        if not scores:
            continue
        rows.append(
            {
                "name": name,
                "seeds": done,
                "scores": scores,
                "best_epochs": f"{min(best)}-{max(best)}",
                "seconds": seconds / len(seeds),
            }
        )
        if args.out:  # long runs: keep a partial table on disk after every variant
            partial = render(rows, describe(prep, args, time.perf_counter() - start, gathered))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(partial + "\n\n(PARTIAL: the run is still going; baselines come last.)\n")
    baseline_scores: dict[str, list] = {name: [] for name in BASELINES}
    base_start = time.perf_counter()
    for seed in args.seeds:
        predictions, oracle = run_baselines(prep, gathered, seed)
        for name, predicted in predictions.items():
            baseline_scores[name].append(score(gathered, predicted, n_top))
    oracle_score = score(gathered, oracle, n_top)
    base_seconds = (time.perf_counter() - base_start) / max(len(BASELINES), 1)
    rows += [
        {
            "name": label,
            "seeds": args.seeds,
            "scores": baseline_scores[name],
            "best_epochs": "-",
            "seconds": base_seconds,
        }
        for name, label in BASELINES.items()
        if baseline_scores[name]
    ]
    table = render(rows, describe(prep, args, time.perf_counter() - start, gathered))
    table += "\n\n" + oracle_line(oracle_score)
    if missing:
        table += f"\n\nNot run (no saved score; `--cached-only` tabulates what exists): {', '.join(missing)}."
    table += "\n\n(training mean: constant over a section's spots, so per-section PCC is undefined (n/a); its pooled PCC only reflects the fold-to-fold change of the training mean.)"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n\n" + PUBLISHED + "\n")
        print(f"\nwritten to {args.out}")
    return table


if __name__ == "__main__":
    main()

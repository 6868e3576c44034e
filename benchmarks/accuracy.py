"""Accuracy of SpaHGC, its ablations and the baselines on the same features, genes and folds.

Every figure is the project's pipelines' own output: the ingestion, embedding and graph
pipelines run once per set of inputs, then for each (variant, seed) the train and
evaluation pipelines run with that variant's parameters, and the table is read from the
evaluation's `fold_metrics` and `overall_metrics`. The best epoch is chosen on each fold's
validation section, never on the test section.

    python -m benchmarks.accuracy --quick                      # smoke run, real HER2+ data
    python -m benchmarks.accuracy --seeds 0 --out benchmarks/results/accuracy_her2st.md
    python -m benchmarks.accuracy --dataset demo --quick
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from spahgc_kedro.metrics import finite_mean

# name -> runtime parameter overrides (nested like --params train.model.use_spatial_edges:false)
PAPER = {"embedding": {"context_scale": 1}, "train": {"w_gene_specific": 0.0, "patience": 0}}
ENSEMBLE_VARIANT = "SpaHGC ensemble: mean of 3 models per fold, one per validation section (graph.validation: rotate)"
# the method whose scores make a variant's row (the evaluation's method names)
ROW_METHOD = {ENSEMBLE_VARIANT: "spahgc_ensemble"}
VARIANTS: dict[str, dict[str, Any]] = {
    "SpaHGC, project default (3x context, gene-specific loss 0.5, patience 50)": {},
    "SpaHGC, paper setting (spot patch, paper loss, 200 epochs)": PAPER,
    "no contrastive loss": {"train": {"use_contrastive": False}},
    "no reference-reference edges": {"train": {"model": {"use_reference_edges": False}}},
    "no spatial edges": {"train": {"model": {"use_spatial_edges": False}}},
    "frozen teacher (reference code)": {"train": {"teacher": "frozen"}},
    # what each change of the default buys (issue 11; docs/metrics.md)
    "without the gene-specific loss": {"train": {"w_gene_specific": 0.0}},
    "without the context view": {"embedding": {"context_scale": 1}},
    "+ factorised decoder": {"train": {"model": {"decoder": "factorised"}}},
    "+ 8 flips/rotations per patch": {"embedding": {"views": 8}},
    "+ refit on training + validation": {"train": {"refit_on_validation": True}},
    "without early stopping (200 epochs)": {"train": {"patience": 0}},
    # issue 16: each fold also trains one model per other validation section; the row is their mean
    ENSEMBLE_VARIANT: {"graph": {"validation": "rotate"}},
}
DEFAULT = next(iter(VARIANTS))
# the default, the paper's setting and the ablation the paper leads with: these get every --seeds
PRIMARY = (DEFAULT, "SpaHGC, paper setting (spot patch, paper loss, 200 epochs)", "no contrastive loss")
# their runs also score the baselines, on their own features
FEATURE_SETS = {
    DEFAULT: "3x context features",
    "SpaHGC, paper setting (spot patch, paper loss, 200 epochs)": "spot features",
}
MODEL = "spahgc"
BASELINES = {
    "ridge_pca": "PCA 256 + ridge (HEST recipe)",
    "depth_rank1": "depth only (rank 1: predicted spot depth x gene lines)",
    "knn_l1": "L1 kNN retrieval, k = 7",
    "train_mean": "training mean",
}
METRICS = ("pcc_acg", "pcc_gene_specific", "pcc_heg50", "pcc_hvg50", "pcc_pooled", "mse")
HEADERS = ("ACG", "gene-specific PCC", "HEG-50", "HVG-50", "pooled PCC", "MSE")
# what changes a saved score besides the parameters: the code that builds graphs, fits and scores
SCORED_CODE = (
    "model",
    "graph.py",
    "targets.py",
    "metrics.py",
    "baselines.py",
    "pipelines/train",
    "pipelines/evaluation",
)
PUBLISHED = """\
Published figures that frame this table (other protocols and data sizes; not the same
folds, so not directly comparable): full 32-section HER2+ leave-one-section-out, mean
per-slide PCC over the 785 genes: Hist2ST 0.156, HGGEP 0.194, mclSTExp 0.232 (as
reported by those papers / the SpaHGC paper)."""


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
        help="seeds of the ablations other than 'no contrastive loss' (default: --seeds); the seeds column says which",
    )
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in training (1: fastest on busy cores)")
    parser.add_argument("--variants", nargs="+", default=None, help="subset of variant names (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 3 epochs, hidden 64, 2 layers")
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR)
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) here")
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="fit nothing: tabulate the (variant, seed) scores earlier runs saved, listing what is missing",
    )
    parser.add_argument("--fresh", action="store_true", help="refit instead of reusing scores saved by earlier runs")
    return parser.parse_args(argv)


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied key by key, nested dicts merged."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run_params(args: argparse.Namespace, raw_dir: Path) -> dict[str, Any]:
    """Runtime parameters every run of this benchmark shares (`kedro run --params ...`)."""
    params: dict[str, Any] = {
        "dataset": args.dataset,
        "raw_dir": str(raw_dir),
        "encoder": args.encoder,
        "device": args.device,
        "train": {"epochs": args.epochs, "threads": args.threads},
    }
    if args.dataset == "her2st":
        params["datasets"] = {"her2st": {"gene_panel": {"rule": "list", "path": str(args.gene_list)}}}
    if args.quick:
        params["train"]["model"] = {"hidden": 64, "n_layers": 2}
    return params


def upstream_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters the ingestion, embedding and graph pipelines depend on (not training's)."""
    return {key: value for key, value in params.items() if key not in ("train", "seed")}


def prepare(args: argparse.Namespace, params: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Run ingestion, embedding and graph once for these inputs; (their data root, what they wrote)."""
    upstream = upstream_params(params)
    root = args.work_dir / args.dataset / f"upstream-{common.digest(upstream)}"
    root.mkdir(parents=True, exist_ok=True)
    # one process at a time writes a data root: benchmarks of disjoint variants may run in parallel
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seed_embeddings(root, upstream)
        catalog = common.project_catalog(root, **upstream)
        common.run_pipelines(catalog, "ingestion", "embedding", "graph")
        written = {name: catalog.load(name) for name in ("section_manifest", "folds", "target_scaling")}
    return root, written


EMBEDDING_KEY_FILE = ".embedding-key"


def seed_embeddings(root: Path, upstream: dict[str, Any]) -> None:
    """Copy into a new data root the embeddings of an earlier one that differs only in its graph parameters
    (e.g. graph.validation: rotate), so that variant embeds nothing again. The embedding stage still checks each
    file's content key and re-embeds a section whose key differs."""
    key = common.digest({name: value for name, value in upstream.items() if name != "graph"})
    features = root / "04_feature"
    if not features.exists():
        for earlier in sorted(root.parent.glob(f"upstream-*/{EMBEDDING_KEY_FILE}")):
            if earlier.read_text() == key and (earlier.parent / "04_feature").is_dir():
                shutil.copytree(earlier.parent / "04_feature", features)
                break
    (root / EMBEDDING_KEY_FILE).write_text(key)


def code_version() -> str:
    """Hash of the sources behind a score (SCORED_CODE), so a score saved by older code is never tabulated."""
    package = common.REPO / "src" / "spahgc_kedro"
    contents = []
    for entry in SCORED_CODE:
        paths = sorted((package / entry).rglob("*.py")) if (package / entry).is_dir() else [package / entry]
        contents.extend(path.read_text() for path in paths)
    return common.digest(contents)


# parameter groups that do not change a score: the report's maps and the predict pipeline
UNSCORED_PARAMS = ("interpretation", "predict")


def score_key(params: dict[str, Any]) -> dict[str, Any]:
    """What a score depends on: every resolved parameter of the run (of the datasets, only the active one's
    preset, so adding a preset for another dataset keeps the scores) and the scored sources."""
    resolved = common.project_parameters(**params)
    scored = {name: value for name, value in resolved.items() if name not in ("datasets", *UNSCORED_PARAMS)}
    return {"params": scored, "preset": resolved["datasets"][resolved["dataset"]], "code": code_version()}


def score_path(args: argparse.Namespace, params: dict[str, Any]) -> Path:
    """Where one (variant, seed) score is saved: keyed on `score_key`, so a changed default in conf/base or a
    changed source file never reuses an older score."""
    return args.work_dir / args.dataset / "scores" / f"seed{params['seed']}-{common.digest(score_key(params))}.json"


def fit_and_score(
    args: argparse.Namespace, upstream: Path, params: dict[str, Any], fit: bool = True
) -> dict[str, Any] | None:
    """One variant and seed: train + evaluation pipelines, read back per method and fold (saved for reuse).

    Saving each (variant, seed) lets separate processes share one table: run disjoint
    `--variants`/`--seeds` in parallel, then a final run with all of them only renders.
    """
    path = score_path(args, params)
    if path.exists() and not args.fresh:
        return json.loads(path.read_text())
    if args.cached_only or not fit:
        return None
    root = common.run_folder(args.work_dir / args.dataset / "runs" / path.stem, upstream)
    start = time.perf_counter()
    catalog = common.project_catalog(root, **params)
    common.run_pipelines(catalog, "train", "evaluation")
    seconds = time.perf_counter() - start
    fold_metrics = catalog.load("fold_metrics")
    overall = catalog.load("overall_metrics")
    record = {
        "methods": {
            method: {
                "per_fold": {
                    f"{row['fold']}/{row['section_id']}": {m: float(row[m]) for m in METRICS if m in row}
                    for _, row in fold_metrics[fold_metrics["method"] == method].iterrows()
                },
                "pcc_pooled": float(values["pcc_pooled"]),
            }
            for method, values in overall["methods"].items()
        },
        "reference_lines": overall["reference_lines"],
        "best_epochs": [int(c["best_epoch"]) for c in catalog.load("trained_models").values()],
        "seconds": seconds,
        "seed": params["seed"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, default=float, indent=1))
    return record


def spread(scores: list[dict[str, Any]], metric: str) -> tuple[float, float, float]:
    """(mean, sd over folds of the seed-mean, sd over seeds of the fold-mean); NaN-aware."""
    if metric == "pcc_pooled":
        values = np.array([s["pcc_pooled"] for s in scores], dtype=float)
        return finite_mean(values), float("nan"), _nanstd(values)
    keys = sorted(scores[0]["per_fold"])
    grid = np.array([[s["per_fold"][k].get(metric, np.nan) for k in keys] for s in scores], dtype=float)
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
        "| method | seeds | " + " | ".join(HEADERS) + " | best epochs | train + evaluation time per seed |",
        "|---" * (len(HEADERS) + 4) + "|",
    ]
    for row in rows:
        cells = [_cell(*spread(row["scores"], m)) for m in METRICS]
        seeds = ",".join(str(seed) for seed in row["seeds"])
        lines.append(
            f"| {row['name']} | {seeds} | " + " | ".join(cells) + f" | {row['best_epochs']} | {row['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def oracle_line(records: list[dict[str, Any]]) -> str:
    """The oracle-depth reference line: a ceiling that uses the test sections' measurements, never a method."""
    lines = [r["reference_lines"]["oracle_depth"] for r in records]
    cells = ", ".join(
        f"{header} {finite_mean([line[metric] for line in lines]):.3f}"
        for metric, header in zip(METRICS, HEADERS, strict=True)
        if metric in lines[0]
    )
    return (
        "Reference line, not a method: oracle depth (the test section's MEASURED spot depth through the training "
        f"spots' gene lines; the most a depth-only prediction can score): {cells}."
    )


def describe(args: argparse.Namespace, written: dict[str, Any], params: dict[str, Any], wall: float) -> list[str]:
    """Header lines: data, genes, targets, folds, PCC conventions, encoder, machine, wall time."""
    manifest, folds, scaling = written["section_manifest"], written["folds"], written["target_scaling"]
    project = common.project_parameters(**params)
    train = project["train"]
    sections = ", ".join(f"{s['section_id']} ({s['n_spots']} spots)" for s in manifest["sections"])
    genes = sorted({len(s["genes"]) for s in scaling.values()})
    plan = "; ".join(
        f"{name}: test {f['test']}, validation {f['validation']}, train {f['train']}"
        for name, f in sorted(folds["folds"].items())
    )
    panel = (
        "the 785-gene HER2+ list, genes present in every section"
        if args.dataset == "her2st"
        else "HVG intersection of the fold training sections"
    )
    quick = " (QUICK: smaller model)" if args.quick else ""
    return [
        f"### Accuracy: {args.dataset}" + (" (quick smoke run, not a result)" if args.quick else ""),
        "",
        f"- data: {args.dataset}, sections {sections}",
        f"- genes: {'/'.join(map(str, genes))} ({panel}); target transform: {project['graph']['target_transform']} "
        "(log10(count + 1)), min-max scaled per gene with the fold's train+validation statistics",
        f"- folds: {folds['scheme']}, {len(folds['folds'])} folds ({plan}); SpaHGC trains on `train`, picks its "
        "epoch by validation PCC; baselines fit on train + validation (L1 kNN: on train, from the test graph's retrieval)",
        "- PCC conventions: ACG / HEG-50 / HVG-50 = per test section, Pearson per gene over its spots, mean over "
        "(all / 50 most expressed / 50 most variable measured) genes, then mean over folds; pooled PCC = Pearson per "
        "gene over all test spots of all folds concatenated (HEST-Benchmark), mean over genes; MSE on the min-max "
        "scaled targets",
        "- gene-specific PCC (docs/metrics.md): per test section and gene, the partial correlation of predicted and "
        "measured values given the measured spot depth (mean min-max target over the panel), mean over genes, then "
        "over folds; 0 for any prediction that only follows depth. Depth only = ridge-predicted depth through each "
        "gene's least-squares line on the training spots (fit on train + validation like every baseline)",
        "- spread: `±Xf` = sd over folds of the seed-averaged value, `±Xs` = sd over seeds of the fold-averaged "
        "value (pooled PCC: over seeds only); the seeds column lists each row's seeds",
        f"- encoder: {args.encoder} (frozen, ImageNet weights), {project['embedding']['patch_size_px']} px centred "
        f"patches; model: hidden {train['model']['hidden']}, {train['model']['n_layers']} layers, {train['epochs']} "
        f"epochs{quick}, lr {train['lr']}, torch threads {args.threads}",
        "- how: `python -m benchmarks.accuracy`: the project's ingestion, embedding and graph pipelines once, then "
        "the train and evaluation pipelines per (variant, seed), with the variant's --params",
        f"- machine: {common.machine_line(args.device)}",
        f"- wall time: {wall:.0f} s in all"
        if not args.cached_only
        else f"- wall time: {wall:.0f} s to tabulate; the fits ran earlier, possibly in parallel processes",
    ]


def raw_folder(args: argparse.Namespace) -> Path:
    """The raw data folder: the shared HER2+ sections, or a generated demo under the work dir."""
    if args.dataset == "demo":
        raw = args.raw_dir or args.work_dir / "demo" / "raw"
        if not raw.exists():
            from spahgc_kedro.demo import generate_demo

            generate_demo(raw)
        return raw
    return args.raw_dir or common.HER2ST_RAW


def main(argv: list[str] | None = None) -> str:
    """Run every method and print (and optionally write) the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], min(args.epochs, 3)
    if args.dataset == "her2st":
        missing = [str(p) for p in (args.raw_dir or common.HER2ST_RAW, args.gene_list) if not p.exists()]
        if missing:
            print(f"SKIPPED: the real HER2+ data is absent ({', '.join(missing)}); use --dataset demo or --raw-dir.")
            return ""
    start = time.perf_counter()
    base = run_params(args, raw_folder(args))
    # the variants asked for, and the runs that score the baselines
    variants = {
        name: c for name, c in VARIANTS.items() if not args.variants or name in args.variants or name in FEATURE_SETS
    }
    prepared: dict[str, tuple[Path, dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    feature_records: dict[str, list[dict[str, Any]]] = {}
    for name, changes in variants.items():
        params = merged(base, changes)
        key = common.digest(upstream_params(params))
        if key not in prepared:
            prepared[key] = prepare(args, params)
        upstream, written = prepared[key]
        seeds = args.seeds if name in PRIMARY or args.ablation_seeds is None else args.ablation_seeds
        records = []
        for seed in seeds:
            # the baselines' variants only read saved scores when not asked for (parallel processes)
            asked = not args.variants or name in args.variants
            record = fit_and_score(args, upstream, {**params, "seed": seed}, fit=asked)
            if record is None:
                missing.append(f"{name} seed {seed}")
                continue
            records.append(record)
            method = ROW_METHOD.get(name, MODEL)
            acg = finite_mean([v["pcc_acg"] for v in record["methods"][method]["per_fold"].values()])
            single = finite_mean([v["pcc_acg"] for v in record["methods"][MODEL]["per_fold"].values()])
            print(f"{name}, seed {seed}: ACG {acg:.3f} (single models: {single:.3f})", flush=True)
        if name in FEATURE_SETS:
            feature_records[FEATURE_SETS[name]] = records
        if records and (not args.variants or name in args.variants):
            best = [e for r in records for e in r["best_epochs"]]
            rows.append(
                {
                    "name": name,
                    "seeds": [r["seed"] for r in records],
                    "scores": [r["methods"][ROW_METHOD.get(name, MODEL)] for r in records],
                    "best_epochs": f"{min(best)}-{max(best)}",
                    "seconds": float(np.mean([r["seconds"] for r in records])),
                }
            )
    # the baselines are scored in every run; the default's and the paper setting's runs give their rows
    for features, records in feature_records.items():
        for method, label in BASELINES.items():
            scores = [r["methods"][method] for r in records if method in r["methods"]]
            if scores:
                seeds = [r["seed"] for r in records]
                name = f"{label}, {features}"
                rows.append({"name": name, "seeds": seeds, "scores": scores, "best_epochs": "-", "seconds": 0.0})
    header = describe(args, next(iter(prepared.values()))[1], base, time.perf_counter() - start)
    table = render(rows, header)
    if feature_records.get(FEATURE_SETS[DEFAULT]):
        table += "\n\n" + oracle_line(feature_records[FEATURE_SETS[DEFAULT]])
    if missing:
        table += f"\n\nNot run (no saved score; `--cached-only` tabulates what exists): {', '.join(missing)}."
    table += (
        "\n\n(baselines: fitted inside the evaluation pipeline of the runs of the default and of the paper setting, on "
        "those runs' features, so their time is in those rows'; training mean: constant over a section's spots, so per-section PCC is undefined (n/a); its "
        "pooled PCC only reflects the fold-to-fold change of the training mean.)"
    )
    common.write_table(table, args.out, PUBLISHED)
    return table


if __name__ == "__main__":
    main()

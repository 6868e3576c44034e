"""Does the ensemble's spread say where its predictions are wrong? Nested folds on HER2+.

For every held-out section S, three models are trained that never see S: the other three
sections split into two training sections and one validation section, in each of the three
ways (`--params graph.fold:S,graph.validation:V`, the project's graph and train pipelines,
default parameters otherwise). Their mean is the ensemble prediction of S, as `kedro run
--pipeline=predict` makes it for a new slide, and their standard deviation (log10(count + 1)
scale) its uncertainty. The table reports, per held-out section and overall: the ensemble's
ACG and gene-specific PCC against the single models', and whether the spread ranks genes by
accuracy (Spearman of a gene's mean spread with its PCC; PCC of the most and least certain
quartiles of genes).

    python -m benchmarks.uncertainty --out benchmarks/results/uncertainty_her2st.md
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import accuracy, common

SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", type=Path, default=common.HER2ST_RAW)
    parser.add_argument("--gene-list", type=Path, default=common.HER2ST_GENES)
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR)
    parser.add_argument("--sections", nargs="+", default=None, help="held-out sections to run (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def nested_prediction(upstream: Path, work: Path, params: dict[str, Any], held_out: str, validation: str) -> Path:
    """Train the model of (held-out, validation) with the project's pipelines; the saved test prediction's path."""
    saved = work / f"{held_out}-{validation}.npz"
    if saved.exists():
        return saved
    root = work / f"run-{held_out}-{validation}"
    root.mkdir(parents=True, exist_ok=True)
    # share the sections and embeddings; the fold plan, scaling and graphs are this run's own
    for layer in ("01_raw", "02_intermediate", "04_feature"):
        link = root / layer
        if not link.exists():
            link.symlink_to((upstream / layer).resolve(), target_is_directory=True)
    graph = {"fold": held_out, "validation": validation}
    catalog = common.project_catalog(root, **{**params, "seed": SEED, "graph": graph})
    common.run_pipelines(catalog, "graph", "train")
    predictions = catalog.load("predictions")
    (adata,) = [load() for load in predictions.values()]
    np.savez(
        saved,
        normalised=np.asarray(adata.X, dtype=np.float32),
        log_expression=np.asarray(adata.layers["log_expression"], dtype=np.float32),
        measured=np.asarray(adata.layers["measured"], dtype=np.float32),
        genes=np.asarray(adata.var_names, dtype=str),
        spots=np.asarray(adata.obs_names, dtype=str),
    )
    return saved


def section_summary(runs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Ensemble vs single models on one held-out section, and the spread against per-gene accuracy."""
    from scipy.stats import spearmanr

    from spahgc_kedro.metrics import finite_mean, gene_specific_pcc, pearson_per_gene

    measured = runs[0]["measured"]
    for run in runs[1:]:
        if not (np.array_equal(run["genes"], runs[0]["genes"]) and np.array_equal(run["spots"], runs[0]["spots"])):
            raise ValueError("the nested models' predictions do not cover the same spots and genes")
    # the three models share their training + validation sections, so one min-max scaling
    mean = np.mean([r["normalised"] for r in runs], axis=0)
    log_scale = np.stack([r["log_expression"] for r in runs])
    spread = log_scale.std(axis=0).mean(axis=0)
    # the spread relative to how much the gene's prediction varies over the section (predict's var column)
    relative = spread / np.maximum(log_scale.mean(axis=0).std(axis=0), 1e-12)
    pcc = pearson_per_gene(measured, mean)
    keep = np.isfinite(pcc)
    quarter = max(1, keep.sum() // 4)

    def ranked(values: np.ndarray) -> tuple[float, float, float]:
        order = np.argsort(values[keep], kind="stable")
        rho = spearmanr(values[keep], pcc[keep]).statistic
        return float(rho), float(np.mean(pcc[keep][order[:quarter]])), float(np.mean(pcc[keep][order[-quarter:]]))

    absolute_rho, absolute_certain, absolute_uncertain = ranked(spread)
    relative_rho, relative_certain, relative_uncertain = ranked(relative)
    return {
        "ensemble_acg": finite_mean(pcc),
        "single_acg": [finite_mean(pearson_per_gene(measured, r["normalised"])) for r in runs],
        "ensemble_gs": finite_mean(gene_specific_pcc(measured, mean)),
        "single_gs": [finite_mean(gene_specific_pcc(measured, r["normalised"])) for r in runs],
        "spearman": absolute_rho,
        "certain_q": absolute_certain,
        "uncertain_q": absolute_uncertain,
        "relative_spearman": relative_rho,
        "relative_certain_q": relative_certain,
        "relative_uncertain_q": relative_uncertain,
        "genes": int(keep.sum()),
        "panel": int(len(runs[0]["genes"])),
    }


def render(summaries: dict[str, dict[str, Any]], header: list[str]) -> str:
    """The markdown table: one row per held-out section, then the mean."""
    lines = [
        *header,
        "",
        "| held-out section | ensemble ACG | single models' ACG (mean; range) | ensemble gene-specific PCC "
        "| single models' gene-specific PCC (mean) | spread: Spearman with PCC | spread: PCC of most / least "
        "certain quarter | relative spread: Spearman with PCC | relative spread: PCC of most / least certain quarter |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for section, s in summaries.items():
        lines.append(
            f"| {section} | {s['ensemble_acg']:.3f} | {np.mean(s['single_acg']):.3f} ({min(s['single_acg']):.3f}-"
            f"{max(s['single_acg']):.3f}) | {s['ensemble_gs']:.3f} | {np.mean(s['single_gs']):.3f} | "
            f"{s['spearman']:.2f} | {s['certain_q']:.3f} / {s['uncertain_q']:.3f} | {s['relative_spearman']:.2f} | "
            f"{s['relative_certain_q']:.3f} / {s['relative_uncertain_q']:.3f} |"
        )
    values = list(summaries.values())

    def mean(key: str) -> float:
        return float(np.mean([np.mean(v[key]) for v in values]))

    lines.append(
        f"| mean | {mean('ensemble_acg'):.3f} | {mean('single_acg'):.3f} | {mean('ensemble_gs'):.3f} | "
        f"{mean('single_gs'):.3f} | {mean('spearman'):.2f} | {mean('certain_q'):.3f} / {mean('uncertain_q'):.3f} | "
        f"{mean('relative_spearman'):.2f} | {mean('relative_certain_q'):.3f} / {mean('relative_uncertain_q'):.3f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """Train the nested models (reusing saved predictions) and print (and optionally write) the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    missing = [str(p) for p in (args.raw_dir, args.gene_list) if not p.exists()]
    if missing:
        print(f"SKIPPED: the real HER2+ data is absent ({', '.join(missing)}).")
        return ""
    start = time.perf_counter()
    options = accuracy.parse_args(
        ["--raw-dir", str(args.raw_dir), "--gene-list", str(args.gene_list), "--work-dir", str(args.work_dir)]
    )
    params = accuracy.run_params(options, args.raw_dir)
    upstream, written = accuracy.prepare(options, params)
    sections = [s["section_id"] for s in written["section_manifest"]["sections"]]
    work = args.work_dir / "her2st" / "nested" / common.digest({"params": params, "code": accuracy.code_version()})
    work.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for held_out in args.sections or sections:
        runs = []
        for validation in [s for s in sections if s != held_out]:
            path = nested_prediction(upstream, work, params, held_out, validation)
            runs.append(dict(np.load(path)))
        summaries[held_out] = section_summary(runs)
        print(f"{held_out}: {json.dumps(summaries[held_out])}", flush=True)
    genes = " / ".join(str(n) for n in sorted({s["genes"] for s in summaries.values()}))
    panel = " / ".join(str(n) for n in sorted({s["panel"] for s in summaries.values()}))
    header = [
        "### Ensemble and uncertainty: nested folds (her2st)",
        "",
        f"- data: her2st sections {', '.join(sections)}; {genes} genes with a defined PCC per held-out section (of {panel} listed); "
        "targets log10(count + 1), min-max scaled with the training + validation sections' statistics",
        "- folds: for each held-out section, 3 models, each trained on 2 of the other sections and validated on the "
        "third (the project's graph + train pipelines, `graph.fold:<held-out>,graph.validation:<section>`, default "
        f"parameters, seed {SEED}); no model sees the held-out section; the ensemble = their mean",
        "- PCC: per gene over the held-out section's spots, mean over genes (ACG); gene-specific PCC as in the "
        "accuracy table (docs/metrics.md)",
        "- uncertainty: per spot and gene, the sd over the 3 models on the log10(count + 1) scale (as "
        "`layers['uncertainty']` of the predict pipeline); a gene's spread = its mean over spots (predict's "
        "`var['mean_uncertainty']`); relative spread = that divided by the sd over spots of the gene's ensemble "
        "prediction (`var['relative_uncertainty']`); quarters = the 25% of genes with the lowest / highest value; a "
        "useful uncertainty has a negative Spearman and a most-certain quarter above the least-certain one",
        f"- machine: {common.machine_line('cpu')}; wall time {time.perf_counter() - start:.0f} s (saved nested "
        "predictions are reused)",
    ]
    table = render(summaries, header)
    common.write_table(table, args.out)
    return table


if __name__ == "__main__":
    main()

"""What early stopping (`train.patience`) would change, from the validation histories of full-length runs.

Training with patience P follows exactly the same trajectory as the full run until it stops,
so from a full run's per-epoch validation PCC we know, for each P, the epoch it would stop
at and the epoch it would keep; where that epoch is the full run's best epoch the model,
and so its test predictions and every test metric, are the same. The table counts those
folds and the epochs saved. Reads the checkpoints the accuracy benchmark's runs saved
(`data/benchmarks/<dataset>/runs/*/06_models`), keeping only runs trained without patience.

    python -m benchmarks.early_stopping --out benchmarks/results/early_stopping_her2st.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import common

PATIENCES = (10, 20, 30, 40, 50, 60, 80)


def stop_and_keep(val_pcc: list[float], patience: int) -> tuple[int, int]:
    """(epochs run, epoch kept), 1-based, for a validation history under `patience` (fit's rule)."""
    best_epoch, best = 0, -np.inf
    for epoch, value in enumerate(val_pcc, start=1):
        if value > best:
            best_epoch, best = epoch, value
        if epoch - best_epoch >= patience:
            return epoch, best_epoch
    return len(val_pcc), best_epoch


def histories(work_dir: Path, dataset: str) -> list[tuple[str, list[float]]]:
    """(run/fold, validation PCC per epoch) of every full-length fold the accuracy runs saved."""
    import torch

    runs = work_dir / dataset / "runs"
    found = []
    for path in sorted(runs.glob("*/06_models/**/spahgc.pt")):
        if not path.is_file():
            continue
        for fold, checkpoint in torch.load(path, weights_only=True).items():
            values = [row["val_pcc"] for row in checkpoint["history"]]
            if not any(np.isnan(values)):
                found.append((f"{path.relative_to(runs).parts[0]}/{fold}", values))
    return found


def main(argv: list[str] | None = None) -> str:
    """Print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="her2st")
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR)
    parser.add_argument("--epochs", type=int, default=200, help="the full runs' length (others are skipped)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    # runs trained with patience stopped early; only full histories tell what patience would do
    runs = [(name, values) for name, values in histories(args.work_dir, args.dataset) if len(values) == args.epochs]
    if not runs:
        print(
            f"SKIPPED: no {args.epochs}-epoch runs under {args.work_dir / args.dataset / 'runs'}: run the accuracy benchmark first."
        )
        return ""
    lines = [
        f"### Early stopping: what `train.patience` keeps ({args.dataset})",
        "",
        f"- from {len(runs)} folds trained for {args.epochs} epochs without patience by `python -m benchmarks.accuracy` "
        "(every variant and seed found); the best epoch is the one with the highest validation PCC (ties: earlier)",
        "- same folds = the epoch kept under patience is the full run's best epoch, so the model and every test "
        "metric are identical; val PCC lost = mean over folds of (best validation PCC) - (validation PCC of the "
        "epoch kept)",
        f"- machine: {common.cpu_model()} (no training here: read from saved histories)",
        "",
        "| patience | folds with the same model | mean epochs run | epochs saved | val PCC lost (mean / max) |",
        "|---|---|---|---|---|",
    ]
    for patience in PATIENCES:
        same, run_lengths, lost = 0, [], []
        for _, values in runs:
            epochs_run, kept = stop_and_keep(values, patience)
            same += kept == int(np.argmax(values)) + 1
            run_lengths.append(epochs_run)
            lost.append(max(values) - values[kept - 1])
        saved = 1 - np.mean(run_lengths) / args.epochs
        lines.append(
            f"| {patience} | {same}/{len(runs)} | {np.mean(run_lengths):.0f} | {saved:.0%} | "
            f"{np.mean(lost):.4f} / {np.max(lost):.4f} |"
        )
    text = "\n".join(lines)
    common.write_table(text, args.out)
    return text


if __name__ == "__main__":
    main()

"""One training epoch on a large section, whole-graph vs spatial tiles (`train.max_full_graph_spots`): time and peak RSS.

Each size is one generated training section of N spots on a square grid (spatial edges to the 8
grid neighbours), N reference spots from other sections with k = 7 random refer edges per spot
and 3 random reference-close-reference edges each, `dim`-d embeddings and `genes` min-max targets,
in the graph stage's contract; one validation section of the same size is scored at the end of the
epoch (in chunks of the tile size when tiled). The model is the default architecture with the
contrastive branch, as `kedro run --pipeline=train` trains it.

    python -m benchmarks.tiled_training --out benchmarks/results/tiled_training.md
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whole", type=int, nargs="*", default=[5_000, 10_000, 20_000], help="sizes trained whole")
    parser.add_argument("--tiled", type=int, nargs="*", default=[5_000, 10_000, 20_000, 40_000], help="sizes tiled")
    parser.add_argument("--tile", type=int, default=5_000, help="train.max_full_graph_spots")
    parser.add_argument("--genes", type=int, default=785)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def section_graph(n_spots: int, args, seed: int) -> Any:
    """A generated section graph of `n_spots` target and as many reference spots."""
    import torch
    from torch_geometric.data import HeteroData

    rng = np.random.default_rng(seed)
    side = int(np.ceil(n_spots**0.5))
    col, row = np.arange(n_spots) % side, np.arange(n_spots) // side
    graph = HeteroData()
    graph["target"].x = torch.from_numpy(rng.normal(size=(n_spots, args.dim)).astype(np.float32))
    graph["target"].y = torch.from_numpy(rng.random((n_spots, args.genes), dtype=np.float32))
    graph["target"].pos = torch.from_numpy(np.stack([col, row], axis=1).astype(np.float32) * 100)
    reference = np.hstack([rng.normal(size=(n_spots, args.dim)), rng.random((n_spots, args.genes))])
    graph["reference"].x = torch.from_numpy(reference.astype(np.float32))
    refer = rng.integers(0, n_spots, size=(n_spots, 7))
    graph["reference", "refer", "target"].edge_index = torch.from_numpy(
        np.vstack([refer.reshape(-1), np.repeat(np.arange(n_spots), 7)])
    )
    index = {(c, r): i for i, (c, r) in enumerate(zip(col, row, strict=True))}
    near = [
        (index[(c + dc, r + dr)], i)
        for i, (c, r) in enumerate(zip(col, row, strict=True))
        for dc in (-1, 0, 1)
        for dr in (-1, 0, 1)
        if (dc or dr) and (c + dc, r + dr) in index
    ]
    graph["target", "near", "target"].edge_index = torch.tensor(near, dtype=torch.long).T.contiguous()
    close = rng.integers(0, n_spots, size=(n_spots, 3))
    graph["reference", "close", "reference"].edge_index = torch.from_numpy(
        np.vstack([close.reshape(-1), np.repeat(np.arange(n_spots), 3)])
    )
    graph.section_id = f"generated{seed}"
    return graph


def one_epoch(n_spots: int, tile: int, args) -> tuple[int, common.StageMeasure]:
    """Fit one epoch (training section + validation pass) and measure it; also the number of steps."""
    from spahgc_kedro.model import ModelConfig, TrainConfig, fit
    from spahgc_kedro.model.training import training_steps

    warm_up = section_graph(300, args, 2)
    fit(
        [warm_up],
        [],
        TrainConfig(epochs=1, threads=args.threads, model=ModelConfig(hidden=args.hidden)),
        progress=False,
    )
    train, validation = section_graph(n_spots, args, 0), section_graph(n_spots, args, 1)
    config = TrainConfig(
        epochs=1, threads=args.threads, max_full_graph_spots=tile, model=ModelConfig(hidden=args.hidden)
    )
    with common.measure() as m:
        fit([train], [validation], config, progress=False)
    return len(training_steps([train], tile)), m


def report(rows: list[tuple[int, str, tuple[int, common.StageMeasure]]], args) -> str:
    """The table, one row per (size, mode), with growth exponents per mode."""
    import torch

    lines = [
        "### One training epoch on a large section: whole graph vs spatial tiles (CPU)",
        "",
        f"- data: one generated training section and one validation section of N spots each (square grid, "
        f"8 grid neighbours), N reference spots, k = 7 random refer edges per spot, 3 close edges per "
        f"reference; random {args.dim}-d embeddings, {args.genes} genes",
        f"- model: the default architecture (hidden {args.hidden}, 4 layers, 4 heads) with the EMA teacher and "
        "contrastive loss; one epoch = the training steps and the validation pass",
        f"- tiled: `train.max_full_graph_spots` = {args.tile:,}: one optimiser step per spatial tile (the "
        "tile's spots, the references they retrieved and the edges among them), validation predicted in chunks "
        "of that many spots (the same numbers as whole)",
        "- memory: each row in a fresh process; peak RSS = the process's peak during the epoch (graphs, model, "
        "torch), growth = that peak minus RSS at the epoch's start (the graphs already loaded); sampled every "
        "20 ms; MEASURED",
        f"- machine: {common.cpu_model()}; torch {torch.__version__}, {args.threads} threads",
        "",
        "| spots per section | mode | steps | epoch s | peak RSS (MiB) | growth (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for n, mode, (steps, m) in rows:
        lines.append(
            f"| {n:,} | {mode} | {steps} | {m.seconds:.1f} | {m.peak_rss_mib:,.0f} | {m.peak_growth_mib:,.0f} |"
        )
    for mode in ("whole", "tiled"):
        picked = [(n, m) for n, row_mode, (_, m) in rows if row_mode == mode]
        if len(picked) > 1:
            sizes = [n for n, _ in picked]
            time_slope = common.log_log_slope(sizes, [m.seconds for _, m in picked])
            memory_slope = common.log_log_slope(sizes, [m.peak_growth_mib for _, m in picked])
            lines.append(f"| growth exponent | {mode} | | {time_slope:.2f} | | {memory_slope:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    # each row in a fresh process, after an untimed warm-up there (imports and first calls)
    rows = [(n, "whole", common.in_fresh_process(one_epoch, n, 0, args)) for n in args.whole]
    rows += [(n, "tiled", common.in_fresh_process(one_epoch, n, args.tile, args)) for n in args.tiled]
    text = report(rows, args)
    common.write_table(text, args.out)
    return text


if __name__ == "__main__":
    main()

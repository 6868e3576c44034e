"""Visium HD-size work on a GPU: embedding with UNI's architecture, one training epoch and the test prediction.

1. embedding: an encoder's raw throughput (normalisation + forward on random uint8 batches
   already in host memory) and end to end through the embedding pipeline's own path
   (`SpotPatches` -> DataLoader workers -> `encode_patches`) over the 8 um bins of a generated
   Visium HD pyramidal TIFF (`demo_hd.write_image`: zlib tiles of 256 px, 0.5 um/px), in
   raster order, 224 px patches (the spot's patch, no context view); bf16 autocast on CUDA.
   The loader's share is 1 - end-to-end / raw. UNI's architecture has random weights (the
   real weights need a download); its cost is the same.
2. per size (bins per section), in a fresh process: a fold's graph parts generated in memory
   (`SectionGraphs`: random `--dim`-d embeddings, random targets, the square lattice's spatial
   edges, k_refer random retrieved spots per spot and k_close random close references; 4
   sections: test, validation, 2 train), left in the store as the train stage leaves a
   section above `train.max_full_graph_spots` (`StoredSectionGraph`). MEASURED: one training
   epoch (`fit`: spatial tiles of `--tile` spots, the validation pass in chunks) and the test
   prediction (`predict`, chunks of `--chunk` spots), each with peak GPU memory
   (`torch.cuda.max_memory_allocated`) and peak RSS. ESTIMATED: the graph stage's exact L1
   searches (`nearest_neighbours` on the device), timed for `--retrieval-sample` queries
   against a whole section and scaled by distance terms to the fold's cross-section pairs and
   its graphs' reference kNN.

    python -m benchmarks.visium_hd_gpu --out benchmarks/results/visium_hd_gpu.md
    python -m benchmarks.visium_hd_gpu --device cpu --sizes 2000 --patches 64 --image-bins 400  # a check
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.visium_hd_scaling import random_links, search_terms

SECTIONS = ("HD1", "HD2", "HD3", "HD4")
PLAN = {"test": ["HD1"], "validation": ["HD2"], "train": ["HD3", "HD4"]}
SPACING_PX = 16  # 8 um bins at 0.5 um/px, as demo_hd draws them


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--encoders", nargs="*", default=["uni", "efficientnet_lite0"])
    parser.add_argument("--image-bins", type=int, default=100_000, help="8 um bins of the generated TIFF")
    parser.add_argument("--patches", type=int, default=30_000, help="bins embedded end to end (raster order)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--raw-batches", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=14, help="DataLoader workers decoding patches")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 400_000], help="8 um bins per section")
    parser.add_argument("--dim", type=int, default=1024, help="embedding width (UNI: 1024)")
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--tile", type=int, default=10_000, help="train.max_full_graph_spots")
    parser.add_argument("--chunk", type=int, default=10_000, help="prediction_chunk_spots")
    parser.add_argument("--retrieval-sample", type=int, default=2048, help="query bins timed for retrieval")
    parser.add_argument("--block-size", type=int, default=2048, help="graph.block_size")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def lattice(bins: int) -> np.ndarray:
    """Centres (x, y) in px of about `bins` 8 um bins on demo_hd's square lattice, in raster order."""
    from spahgc_kedro.demo_hd import lattice_side

    side = lattice_side(bins)
    rows, cols = np.divmod(np.arange(side * side), side)
    return np.stack([cols, rows], axis=1) * SPACING_PX + SPACING_PX / 2.0


def embedding_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Raw and end-to-end throughput of each encoder on `args.device`."""
    import torch

    from benchmarks.embedding_throughput import end_to_end, raw_throughput
    from spahgc_kedro.demo_hd import MARGIN_PX, compartments, lattice_side, write_image
    from spahgc_kedro.encoders import REGISTRY, Encoder, build_encoder, create_architecture
    from spahgc_kedro.patches import SpotPatches

    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "section.tif"
        side = lattice_side(args.image_bins)
        start = time.perf_counter()
        height, width = write_image(image, compartments(np.random.default_rng(0), side), seed=0)
        made = time.perf_counter() - start
        centres = lattice(args.image_bins)[: args.patches] + MARGIN_PX
        for name in args.encoders:
            if name == "uni":
                spec = REGISTRY["uni"]
                encoder = Encoder(spec, create_architecture(spec).eval(), "random", "random")
            else:
                encoder = build_encoder(name)
            raw = raw_throughput(encoder, device, args.batch_size, args.raw_batches)
            patches = SpotPatches(image, centres, patch_px=224, output_px=encoder.spec.input_px)
            with common.measure(cuda=device.type == "cuda") as m:
                e2e = end_to_end(encoder, device, patches, args.batch_size, args.num_workers)
            rows.append(
                {
                    "encoder": name,
                    "raw": raw,
                    "e2e": e2e,
                    "patches": len(patches),
                    "measure": m,
                    "image": f"{width:,} x {height:,} px ({image.stat().st_size / 2**20:,.0f} MiB, written in "
                    f"{made:.0f} s)",
                }
            )
            print(f"[embedding] {name}: raw {raw:,.0f} patches/s, end to end {e2e:,.0f} patches/s", flush=True)
    return rows


def generated_graphs(bins: int, args: argparse.Namespace) -> Any:
    """One fold's `SectionGraphs` over 4 generated sections of about `bins` bins each (see the module doc)."""
    from spahgc_kedro.graph import spatial_edges
    from spahgc_kedro.graph_store import SectionGraphs

    positions = lattice(bins)
    n_spots = positions.shape[0]
    # the visium_hd preset's radius (1.5 spacings) and the graph stage's max_spatial_neighbours
    near_edges = spatial_edges(positions, 1.5 * SPACING_PX, 5)
    genes = [f"gene{i}" for i in range(args.genes)]
    parts = {}
    for index, section_id in enumerate(SECTIONS):
        rng = np.random.default_rng(index)
        parts[section_id] = {
            "embedding": rng.standard_normal((n_spots, args.dim), dtype=np.float32),
            "expression": rng.random((n_spots, args.genes), dtype=np.float32),
            "positions": positions,
            "near_edges": near_edges,
            "spot_ids": [f"{section_id}_{i}" for i in range(n_spots)],
        }
    fold = {
        "mean": np.zeros(args.dim, dtype=np.float32),
        "std": np.ones(args.dim, dtype=np.float32),
        "genes": genes,
        "min": np.zeros(args.genes, dtype=np.float32),
        "max": np.ones(args.genes, dtype=np.float32),
        "transform": "log10",
    }
    links = {}
    for index, section_id in enumerate(SECTIONS):
        candidates = [c for c in PLAN["train"] if c != section_id]
        sizes = np.full(len(candidates), n_spots)
        links[section_id] = random_links(candidates, sizes, n_spots, 7, 3, np.random.default_rng(10 + index))
    return SectionGraphs({"HD1": PLAN}, genes, parts.__getitem__, lambda _: fold, lambda _, s: links[s])


def stage_rows(bins: int, args: argparse.Namespace) -> dict[str, Any]:
    """One size in this (fresh) process: the training epoch, the test prediction and the retrieval estimate."""
    import torch

    from spahgc_kedro.graph import nearest_neighbours, retrieval_pairs
    from spahgc_kedro.model import ModelConfig, TrainConfig, fit
    from spahgc_kedro.model.training import load_model, predict, training_steps

    on_cuda = torch.device(args.device).type == "cuda"
    config = TrainConfig(epochs=1, device=args.device, max_full_graph_spots=args.tile, model=ModelConfig())
    # untimed: imports, CUDA context and first kernels
    small = generated_graphs(2 * args.tile, args)
    fit([small.stored("HD1/HD3")], [], config, progress=False)

    with common.measure() as made:
        graphs = generated_graphs(bins, args)
        train = [graphs.stored(f"HD1/{s}") for s in PLAN["train"]]
        validation = [graphs.stored("HD1/HD2")]
        test = graphs.stored("HD1/HD1")
        for graph in (*train, *validation, test):
            graph.skeleton()
    with common.measure(cuda=on_cuda) as epoch:
        result = fit(train, validation, config, progress=False)
    model = load_model(result.to_checkpoint())
    with common.measure(cuda=on_cuda) as predicted:
        prediction = predict(model, test, args.device, args.chunk)

    queries = graphs.section("HD1")["embedding"][: args.retrieval_sample]
    candidates = graphs.section("HD2")["embedding"]
    nearest_neighbours(queries[:8], candidates[:4096], 7, "l1", args.block_size, device=args.device)  # warm-up
    with common.measure(cuda=on_cuda) as searched:
        nearest_neighbours(queries, candidates, 7, "l1", args.block_size, device=args.device)
    spots = {s: graphs.num_spots(f"HD1/{s}") for s in SECTIONS}
    references = [graphs.links("HD1", s)["spot_index"].shape[0] for s in SECTIONS]
    work = search_terms(retrieval_pairs({"folds": {"HD1": PLAN}}), spots, references, args.dim, args.genes)
    per_term = searched.seconds / (queries.shape[0] * candidates.shape[0] * args.dim)
    return {
        "bins": spots["HD1"],
        "made": made,
        "epoch": epoch,
        "steps": len(training_steps(train, args.tile)),
        "predict": predicted,
        "predicted_shape": tuple(prediction.shape),
        "search": searched,
        "search_s": per_term * (work["cross_section"] + work["close"]),
        **work,
    }


def report(
    embedding: list[dict[str, Any]] | str, stages: list[tuple[int, dict[str, Any] | str]], args: argparse.Namespace
) -> str:
    """The embedding table and the stage table (a row per requested size, or its error), with what was measured
    and what estimated."""
    import torch

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        "### Visium HD-size work on a GPU",
        "",
        f"- machine: {common.cpu_model()}; {name}; torch {torch.__version__}; device {args.device}",
    ]
    if isinstance(embedding, str):
        lines += ["", f"Embedding: FAILED ({embedding})"]
    elif embedding:
        lines += [
            "",
            "#### Embedding: raw encoder vs end to end",
            "",
            f"- raw: normalisation + forward on random uint8 batches of {args.batch_size} already in host memory "
            f"({args.raw_batches} batches after a warm-up); end to end: `SpotPatches` -> DataLoader "
            f"({args.num_workers} workers) -> `encode_patches`, batch {args.batch_size}, over the first "
            f"{embedding[0]['patches']:,} 8 um bins in raster order of a generated Visium HD pyramidal TIFF "
            f"(`demo_hd.write_image`, {embedding[0]['image']}); 224 px patches (the spot's patch, no context view)",
            f"- {'bf16 autocast' if device.type == 'cuda' else 'float32'}; uni = UNI's architecture "
            "(vit_large_patch16_224) with random weights (same cost as the real weights); MEASURED",
            "",
            "| encoder | raw patches/s | end-to-end patches/s | loader's share | end-to-end GPU peak (MiB) |",
            "|---|---|---|---|---|",
        ]
        for row in embedding:
            share = max(0.0, 1 - row["e2e"] / row["raw"])
            lines.append(
                f"| {row['encoder']} | {row['raw']:,.0f} | {row['e2e']:,.0f} | {100 * share:.0f}% | "
                f"{row['measure'].gpu_peak_mib:,.0f} |"
            )
    if stages:
        lines += [
            "",
            "#### One training epoch, the test prediction and the graph stage's searches",
            "",
            f"- data: 4 generated sections per size (test, validation, 2 train) on demo_hd's square lattice; random "
            f"{args.dim}-d embeddings, {args.genes} random targets, spatial edges within 1.5 spacings (at most 5), "
            "7 random retrieved spots per spot and 3 random close references, held as the train stage holds a "
            "large section (`StoredSectionGraph`: features read per tile and per chunk)",
            f"- model: the default (hidden 256, 4 layers, 4 heads, EMA teacher + contrastive loss); "
            f"`train.max_full_graph_spots` {args.tile:,}, `prediction_chunk_spots` {args.chunk:,}",
            "- GPU peak = torch.cuda.max_memory_allocated during the stage; peak RSS of the process during it "
            "(the generated sections, about 4 x bins x (dim + genes) x 4 bytes, included)",
            f"- retrieval: exact L1 (`nearest_neighbours`, float32 torch tiles of {args.block_size:,}) timed for "
            f"{args.retrieval_sample:,} queries against a whole section, scaled by distance terms to the fold's "
            "6 cross-section pairs and 4 graphs' reference kNN: ESTIMATED",
            "",
            "| bins per section | stage | s | GPU peak (MiB) | peak RSS (MiB) | how |",
            "|---|---|---|---|---|---|",
        ]
        for requested, row in stages:
            if isinstance(row, str):
                lines.append(f"| {requested:,} requested | all | | | | FAILED: {row} |")
                continue
            epoch, predicted, searched = row["epoch"], row["predict"], row["search"]
            lines += [
                f"| {row['bins']:,} | training epoch | {epoch.seconds:,.1f} | {epoch.gpu_peak_mib:,.0f} | "
                f"{epoch.peak_rss_mib:,.0f} | MEASURED: {row['steps']} tile steps + the validation pass |",
                f"| {row['bins']:,} | test prediction | {predicted.seconds:,.1f} | {predicted.gpu_peak_mib:,.0f} | "
                f"{predicted.peak_rss_mib:,.0f} | MEASURED: {row['predicted_shape'][0]:,} spots x "
                f"{row['predicted_shape'][1]} genes |",
                f"| {row['bins']:,} | graph stage's searches | {row['search_s']:,.0f} | {searched.gpu_peak_mib:,.0f} | "
                f"{searched.peak_rss_mib:,.0f} | ESTIMATED from {args.retrieval_sample:,} queries x "
                f"{row['bins']:,} candidates in {searched.seconds:.2f} s |",
            ]
        measured = [row for _, row in stages if not isinstance(row, str)]
        if len(measured) > 1:
            bins = [row["bins"] for row in measured]
            slopes = {
                stage: common.log_log_slope(bins, [row[stage].seconds for row in measured])
                for stage in ("epoch", "predict")
            }
            lines += [
                "",
                f"Growth exponents of time with bins per section: training epoch {slopes['epoch']:.2f}, "
                f"test prediction {slopes['predict']:.2f}.",
            ]
    return "\n".join(lines) + "\n"


def attempt(part: str, function: Any, *args: Any) -> Any:
    """`function(*args)`, or on an error the error's text (printed), so one failed part leaves the others' rows."""
    try:
        return function(*args)
    except Exception as error:  # a device run keeps what the other parts measured
        print(f"[{part}] FAILED: {type(error).__name__}: {error}", flush=True)
        return f"{type(error).__name__}: {error}"


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    embedding = attempt("embedding", embedding_rows, args) if args.encoders else []
    stages = []
    for bins in args.sizes:
        # each size in a fresh process; the table is rewritten after each part, so a run cut short keeps the rest
        common.write_table(report(embedding, stages, args), args.out)
        stages.append((bins, attempt(f"{bins:,} bins", common.in_fresh_process, stage_rows, bins, args)))
    table = report(embedding, stages, args)
    common.write_table(table, args.out)
    return table


if __name__ == "__main__":
    main()

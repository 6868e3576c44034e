"""Wall time and peak memory per stage (ingestion, embedding, graph, one training epoch,
evaluation) on the real HER2+ sections and on generated Visium-like sections, with the
growth exponent (log-log slope) of each stage, and training-epoch time against the
number of reference (training) sections.

Generated sections are written in the Space Ranger layout (mtx folder, tissue positions,
scale factors, a tiled TIFF) on a hexagonal grid, so ingestion runs the project's Visium
reader. Each size is a set of 4 sections of that many spots and one leave-one-section-out
fold (test, validation, 2 training sections), built by the graph pipeline's nodes.
Embeddings of generated sections are random features (`--dim`); with `--encoder NAME`
the encoder is timed on `--encoder-sample` patches and the full-section time is
EXTRAPOLATED linearly (labelled so). `--gpu` times UNI's architecture
(timm vit_large_patch16_224, random weights, bf16) and trains on CUDA when available.

    python benchmarks/scaling.py                      # HER2+ + 1k, 5k spots (runs here)
    python benchmarks/scaling.py --sizes 1000 5000 20000 50000 --encoder efficientnet_lite0
    python benchmarks/scaling.py --quick              # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STAGES = ("ingestion", "embedding", "graph", "train epoch", "evaluation")
SPACING_PX = 200.0  # Visium: 100 um centre to centre at about 0.5 um / px
TILE = 512


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000], help="spots per generated section")
    parser.add_argument("--genes", type=int, default=785, help="genes of generated sections (the HER2+ panel size)")
    parser.add_argument("--dim", type=int, default=1280, help="random feature width (EfficientNet-Lite0: 1280, UNI: 1024)")
    parser.add_argument("--encoder", default=None, help="time this encoder on a patch sample of generated sections")
    parser.add_argument("--encoder-sample", type=int, default=128)
    parser.add_argument("--ref-counts", type=int, nargs="+", default=[2, 3, 4, 6], help="training sections per fold")
    parser.add_argument("--ref-size", type=int, default=1000, help="spots per section for the reference-count sweep")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads during the training epoch")
    parser.add_argument("--no-her2st", action="store_true", help="skip the real HER2+ sections")
    parser.add_argument("--gpu", action="store_true", help="CUDA + UNI's architecture (random weights); skipped without CUDA")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, no HER2+ embedding")
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR / "scaling")
    parser.add_argument("--out", type=Path, default=None, help="write the tables (markdown) here")
    return parser.parse_args(argv)


def hex_positions(n_spots: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pixel centres and (array_row, array_col) of n spots on a Visium-like hexagonal grid."""
    side = int(np.ceil(np.sqrt(n_spots))) + 1
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    rows, cols = rows.ravel()[:n_spots], cols.ravel()[:n_spots]
    x = 2 * SPACING_PX + cols * SPACING_PX + (rows % 2) * SPACING_PX / 2
    y = 2 * SPACING_PX + rows * SPACING_PX * np.sqrt(3) / 2
    return np.stack([x, y], axis=1), np.stack([rows, 2 * cols + rows % 2], axis=1)


def write_tiff(path: Path, width: int, height: int) -> None:
    """A tiled, compressed H&E-coloured TIFF written tile by tile (never held whole in memory)."""
    import tifffile

    rng = np.random.default_rng(0)
    tiles = [
        (np.array([215, 150, 200]) * rng.random((TILE, TILE, 1)) * 0.4 + 130).astype(np.uint8) for _ in range(4)
    ]
    count = (-(-height // TILE)) * (-(-width // TILE))
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            (tiles[i % 4] for i in range(count)),
            shape=(height, width, 3),
            tile=(TILE, TILE),
            photometric="rgb",
            compression="zlib",
            dtype=np.uint8,
        )


def write_visium_section(folder: Path, n_spots: int, n_genes: int, seed: int) -> None:
    """One generated section in the Space Ranger layout, with spatially smooth Poisson counts."""
    import scipy.io
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    xy, rowcol = hex_positions(n_spots)
    spatial = folder / "spatial"
    matrix_dir = folder / "filtered_feature_bc_matrix"
    spatial.mkdir(parents=True, exist_ok=True)
    matrix_dir.mkdir(parents=True, exist_ok=True)
    barcodes = [f"S{seed}-{i:06d}-1" for i in range(n_spots)]
    # a few smooth spatial programs drive every gene, so expression is structured like tissue
    waves = rng.normal(size=(4, 2)) / (SPACING_PX * 8)
    programs = np.sin(xy @ waves.T + rng.uniform(0, 6, 4))
    rate = np.exp(rng.uniform(-2.5, 0.5, n_genes) + programs @ rng.normal(0, 0.6, (4, n_genes)))
    counts = sp.csr_matrix(rng.poisson(rate).astype(np.float32))
    scipy.io.mmwrite(str(matrix_dir / "matrix.mtx"), counts.T.tocoo(), field="integer")
    genes = [f"GENE{g:04d}" for g in range(n_genes)]
    (matrix_dir / "features.tsv").write_text("".join(f"{g}\t{g}\tGene Expression\n" for g in genes))
    (matrix_dir / "barcodes.tsv").write_text("".join(f"{b}\n" for b in barcodes))
    lines = [
        f"{b},1,{r},{c},{y:.1f},{x:.1f}\n" for b, (r, c), (x, y) in zip(barcodes, rowcol, xy, strict=True)
    ]
    (spatial / "tissue_positions_list.csv").write_text("".join(lines))
    (spatial / "scalefactors_json.json").write_text(json.dumps({"spot_diameter_fullres": 0.55 * SPACING_PX}))
    width, height = (xy.max(axis=0) + 2 * SPACING_PX).astype(int)
    write_tiff(folder / "image.tif", int(width), int(height))


def generated_dataset(root: Path, n_spots: int, n_sections: int, n_genes: int) -> Path:
    """A folder of n_sections generated sections (written once, reused) and its gene list."""
    raw = root / f"visium_{n_spots}x{n_sections}_{n_genes}g"
    done = raw / ".complete"
    if not done.exists():
        for index in range(n_sections):
            write_visium_section(raw / f"G{index}", n_spots, n_genes, seed=index)
        (raw / "genes.txt").write_text("".join(f"GENE{g:04d}\n" for g in range(n_genes)))
        done.touch()
    return raw


def random_embeddings(sections: dict[str, Any], dim: int, seed: int) -> dict[str, Any]:
    """Random features in the patch-embedding form (AnnData per section), a stand-in for an encoder."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    out = {}
    for section_id, section in sections.items():
        adata = ad.AnnData(X=rng.normal(size=(section.n_obs, dim)).astype(np.float32))
        adata.obs_names = section.obs_names.copy()
        adata.uns["encoder"] = {"name": "random", "dim": dim}
        out[section_id] = adata
    return out


def time_encoder_sample(section: Any, name: str, device: Any, sample: int, gpu: bool) -> tuple[float, int]:
    """Seconds to embed `sample` patches of one section with the project's patch reader and encoder loop."""
    from spahgc_kedro import encoders
    from spahgc_kedro.patches import SpotPatches

    if gpu:
        spec = encoders.REGISTRY["uni"]
        encoder = encoders.Encoder(spec, encoders.create_architecture(spec).eval(), "random weights", "random")
    else:
        encoder = encoders.build_encoder(name)
    rows = np.linspace(0, section.n_obs - 1, min(sample, section.n_obs)).astype(int)
    patches = SpotPatches(
        section.uns["image_path"], section.obsm["spatial"][rows], patch_px=224, output_px=encoder.spec.input_px
    )
    batch = 64 if gpu else 32
    encoders.encode_patches(encoder, SpotPatches(section.uns["image_path"], section.obsm["spatial"][rows[:batch]],
                            patch_px=224, output_px=encoder.spec.input_px), device, batch_size=batch, num_workers=0)
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    start = time.perf_counter()
    encoders.encode_patches(encoder, patches, device, batch_size=batch, num_workers=2)
    return time.perf_counter() - start, len(rows)


def one_epoch(graphs: dict[str, Any], folds: dict[str, Any], args, device: str) -> float:
    """fit() for one epoch on the fold's training graphs (+ the validation pass): seconds."""
    from spahgc_kedro.model.training import TrainConfig, fit
    from spahgc_kedro.pipelines.train.nodes import graphs_by_role

    fold = next(iter(folds["folds"]))
    config = TrainConfig(epochs=1, hidden=args.hidden, seed=0, device=device, threads=args.threads)
    train = graphs_by_role(graphs, folds, fold, "train")
    validation = graphs_by_role(graphs, folds, fold, "validation")
    start = time.perf_counter()
    fit(train, validation, config, progress=False)
    return time.perf_counter() - start


def evaluate(graphs: dict[str, Any], folds: dict[str, Any], params: dict[str, Any], device: str, args) -> None:
    """Predict the test section with an untrained model, score it, and run the evaluation baselines."""
    from spahgc_kedro.metrics import section_metrics
    from spahgc_kedro.model.training import TrainConfig, _model_config, build_model, predict
    from spahgc_kedro.pipelines.evaluation.nodes import predict_baselines
    from spahgc_kedro.pipelines.train.nodes import graphs_by_role

    fold = next(iter(folds["folds"]))
    test = graphs_by_role(graphs, folds, fold, "test")[0]
    n_genes, dim = test["target"].y.shape[1], test["target"].x.shape[1]
    model = build_model(_model_config(TrainConfig(hidden=args.hidden), dim, n_genes))
    predicted = predict(model, test, device)
    measured = test["target"].y.numpy()
    section_metrics(measured, predicted)
    gathered = {fold: {"fold": fold, "section_id": test.section_id, "genes": list(test.genes),
                       "spot_ids": [str(s) for s in test.spot_ids], "measured": measured}}
    predict_baselines(graphs, folds, gathered, params["evaluation"], 0)


def run_stages(raw: Path, preset: dict[str, Any], params: dict[str, Any], args, device: Any, real: bool) -> dict[str, Any]:
    """Measure every stage on one dataset folder; returns {stage: StageMeasure} and sizes."""
    from spahgc_kedro.encoders import select_device  # noqa: F401 - keeps heavy imports out of timings

    measures: dict[str, common.StageMeasure] = {}
    with common.measure() as m:
        sections, manifest = common.read_raw_sections(raw, preset)
    measures["ingestion"] = m
    first = sorted(sections)[0]
    with common.measure() as m:
        if real:
            embeddings = common.embed_with_cache(
                sections, "efficientnet_lite0", str(device), 0, params["embedding"], args.work_dir / "her2st_embeddings_fresh"
            )
            m.notes.append("efficientnet_lite0, measured on every spot")
        else:
            embeddings = random_embeddings(sections, args.dim, 0)
            m.notes.append(f"random {args.dim}-d features")
    measures["embedding"] = m
    if not real and (args.encoder or args.gpu):
        name = "uni (vit_large_patch16_224, random weights)" if args.gpu else args.encoder
        seconds, n = time_encoder_sample(sections[first], args.encoder or "uni", device, args.encoder_sample, args.gpu)
        total = seconds / n * sum(a.n_obs for a in sections.values())
        measures["embedding"] = common.StageMeasure(seconds=total, rss_before_mib=m.rss_before_mib, peak_rss_mib=m.peak_rss_mib)
        measures["embedding"].notes.append(f"{name}: EXTRAPOLATED from {n} patches ({seconds:.1f} s), memory not measured")
    params["graph"]["fold"] = first
    with common.measure() as m:
        folds, _, graphs = common.build_graphs(sections, embeddings, manifest, params, preset["name"])
    measures["graph"] = m
    with common.measure() as m:
        one_epoch(graphs, folds, args, str(device))
    measures["train epoch"] = m
    with common.measure() as m:
        evaluate(graphs, folds, params, str(device), args)
    measures["evaluation"] = m
    spots = [a.n_obs for a in sections.values()]
    return {"measures": measures, "spots_per_section": int(np.median(spots)), "sections": len(spots), "folds": folds}


def her2st_rows(args, device: Any) -> dict[str, Any] | None:
    """Stages on the real HER2+ sections (fresh embeddings, not the accuracy cache); None when absent."""
    if not (common.HER2ST_RAW.exists() and common.HER2ST_GENES.exists()):
        print(f"HER2+ skipped: {common.HER2ST_RAW} or {common.HER2ST_GENES} is absent.")
        return None
    cache = args.work_dir / "her2st_embeddings_fresh"
    for old in cache.glob("*.h5ad"):
        old.unlink()
    params = common.project_parameters("her2st", common.HER2ST_RAW)
    preset = {**params["datasets"]["her2st"], "name": "her2st", "raw_dir": str(common.HER2ST_RAW)}
    preset["gene_panel"] = {"rule": "list", "path": str(common.HER2ST_GENES)}
    params["datasets"]["her2st"]["gene_panel"] = preset["gene_panel"]
    return run_stages(common.HER2ST_RAW, preset, params, args, device, real=True)


def generated_rows(n_spots: int, n_sections: int, args, device: Any) -> dict[str, Any]:
    """Stages on n_sections generated sections of n_spots each."""
    raw = generated_dataset(args.work_dir / "raw", n_spots, n_sections, args.genes)
    params = common.project_parameters("visium", raw)
    preset = {**params["datasets"]["visium"], "name": "visium", "raw_dir": str(raw)}
    preset["gene_panel"] = {"rule": "list", "path": str(raw / "genes.txt")}
    params["datasets"]["visium"]["gene_panel"] = preset["gene_panel"]
    return run_stages(raw, preset, params, args, device, real=False)


def reference_sweep(args, device: Any) -> list[tuple[int, float, int]]:
    """(training sections, one-epoch seconds, reference nodes of a training graph) for each count."""
    raw = generated_dataset(args.work_dir / "raw", args.ref_size, max(args.ref_counts) + 2, args.genes)
    params = common.project_parameters("visium", raw)
    preset = {**params["datasets"]["visium"], "name": "visium", "raw_dir": str(raw)}
    preset["gene_panel"] = {"rule": "list", "path": str(raw / "genes.txt")}
    params["datasets"]["visium"]["gene_panel"] = preset["gene_panel"]
    sections, manifest = common.read_raw_sections(raw, preset)
    embeddings = random_embeddings(sections, args.dim, 0)
    rows = []
    for count in args.ref_counts:
        keep = [s["section_id"] for s in manifest["sections"]][: count + 2]
        sub_manifest = {**manifest, "sections": [s for s in manifest["sections"] if s["section_id"] in keep]}
        params["graph"]["fold"] = keep[0]
        folds, _, graphs = common.build_graphs(
            {s: sections[s] for s in keep}, {s: embeddings[s] for s in keep}, sub_manifest, params, "visium"
        )
        seconds = one_epoch(graphs, folds, args, str(device))
        fold = folds["folds"][keep[0]]
        reference_nodes = graphs[f"{keep[0]}/{fold['train'][0]}"]["reference"].x.shape[0]
        rows.append((len(fold["train"]), seconds, reference_nodes))
    return rows


def stage_table(results: list[tuple[str, dict[str, Any]]], generated: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """Markdown rows: seconds and peak RSS growth per stage, and the log-log slopes over generated sizes."""
    lines = [
        "| data | spots/section x sections | " + " | ".join(f"{s} s (MiB)" for s in STAGES) + " |",
        "|---|---" + "|---" * len(STAGES) + "|",
    ]
    for label, result in results:
        cells = []
        for stage in STAGES:
            m = result["measures"][stage]
            extrapolated = any("EXTRAPOLATED" in note for note in m.notes)
            memory = "n/m" if extrapolated else f"{m.peak_growth_mib:.0f}"
            cells.append(f"{m.seconds:.2f}{' (extrap.)' if extrapolated else ''} ({memory})")
        lines.append(f"| {label} | {result['spots_per_section']} x {result['sections']} | " + " | ".join(cells) + " |")
    if len(generated) >= 2:
        sizes = [n for n, _ in generated]
        slope_t = [common.log_log_slope(sizes, [r["measures"][s].seconds for _, r in generated]) for s in STAGES]
        slope_m = [common.log_log_slope(sizes, [r["measures"][s].peak_growth_mib for _, r in generated]) for s in STAGES]
        cells = [f"time {t:.2f}, mem {m:.2f}" for t, m in zip(slope_t, slope_m)]
        lines.append(f"| growth exponent (log-log slope, generated {sizes[0]}..{sizes[-1]}) | | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    """Run the measurements and print the tables."""
    import torch

    from spahgc_kedro.encoders import select_device

    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.quick:
        args.sizes, args.genes, args.dim, args.hidden = [100, 200], 30, 32, 16
        args.ref_counts, args.ref_size, args.no_her2st = [2, 3], 100, True
    if args.gpu and not torch.cuda.is_available():
        print("--gpu: skipped, torch sees no CUDA device on this machine (the CPU measurements still run).")
        args.gpu = False
    device = select_device("cuda" if args.gpu else "cpu")
    # an untimed pass first: library imports and first-call setup would otherwise land in the first row
    generated_rows(100, 4, args, device)
    start = time.perf_counter()
    results: list[tuple[str, dict[str, Any]]] = []
    if not args.no_her2st:
        her2st = her2st_rows(args, device)
        if her2st is not None:
            results.append(("HER2+ (real, patient C)", her2st))
    generated = []
    for n in sorted(args.sizes):
        result = generated_rows(n, 4, args, device)
        generated.append((n, result))
        results.append((f"generated Visium-like ({args.genes} genes)", result))
        print(f"generated {n} spots/section done ({time.perf_counter() - start:.0f} s)", flush=True)
    sweep = reference_sweep(args, device)
    notes = sorted({note for _, r in results for m in r["measures"].values() for note in m.notes})
    lines = [
        "### Scaling: time and peak memory per stage" + (" (quick smoke run, not a result)" if args.quick else ""),
        "",
        "- stages: ingestion = project reader (her2st layout / Space Ranger mtx + TIFF); embedding (see notes); graph = "
        "folds + target scaling + retrieval + every graph of ONE leave-one-section-out fold (4 sections: test, validation, "
        "2 training); train epoch = `fit` for 1 epoch (2 training graphs + validation pass); evaluation = test prediction "
        "+ metrics + the 3 baselines",
        f"- model: hidden {args.hidden}, 4 layers, EMA teacher + contrastive loss, torch threads {args.threads}; device {device}",
        "- an untimed warm-up pass (4 x 100 spots) runs first, so imports are not timed",
        "- cells: seconds (MiB = peak RSS during the stage minus RSS at its start, sampled every 20 ms; n/m = not measured)",
        f"- embedding notes: {'; '.join(notes)}",
        f"- machine: {common.machine_line(str(device))} (cores shared with other developers: timings are noisy)",
        f"- wall time: {time.perf_counter() - start:.0f} s",
        "",
        *stage_table(results, generated),
        "",
        f"Training epoch vs number of training (reference) sections, {args.ref_size} spots each, {args.genes} genes, "
        f"random {args.dim}-d features:",
        "",
        "| training sections | one epoch (s) | reference nodes in one training graph |",
        "|---|---|---|",
        *[f"| {count} | {seconds:.2f} | {nodes} |" for count, seconds, nodes in sweep],
    ]
    if len(sweep) >= 2:
        lines.append(
            f"| growth exponent | {common.log_log_slope([c for c, _, _ in sweep], [s for _, s, _ in sweep]):.2f} | |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        print(f"\nwritten to {args.out}")
    return table


if __name__ == "__main__":
    main()

"""Wall time and peak memory per stage (ingestion, embedding, graph, one training epoch,
evaluation) on the real HER2+ sections and on generated Visium-like sections, with the
growth exponent (log-log slope) of each stage; graph construction against the number of
target spots for a fixed reference set; and training-epoch time against the number of
reference (training) sections.

Generated sections are written in the Space Ranger layout (mtx folder, tissue positions,
scale factors, a tiled TIFF) on a hexagonal grid, so ingestion runs the project's Visium
reader. Each size is a set of 4 sections of that many spots and one leave-one-section-out
fold (test, validation, 2 training sections). Every stage is the project's pipeline
(`common.project_catalog` + `common.run_pipelines`: the registered pipeline on the
project's catalog, outputs under the benchmark's work folder); the train stage runs one
epoch. Embeddings of generated sections are random features (`--dim`) written into the
catalog's `patch_embeddings`; with `--encoder NAME` the encoder is timed on
`--encoder-sample` patches and the full-section time is EXTRAPOLATED linearly
(labelled so). `--gpu` times UNI's architecture
(timm vit_large_patch16_224, random weights, bf16), retrieves with the torch path on CUDA
(`graph.retrieval_device: cuda`), trains on CUDA and reports peak GPU memory per stage.

The fixed-reference table builds only the test section's graph (retrieval against the
training sections + assembly, by `graph.FoldReferences`, the graph pipeline's builder) for
one target section of each `--target-sizes` against the same training sections: it
should grow linearly.

    python -m benchmarks.scaling                      # HER2+ + 1k, 5k spots (runs here)
    python -m benchmarks.scaling --tables fixed-reference   # only the fixed-reference table
    python -m benchmarks.scaling --sizes 1000 5000 20000 50000 --encoder efficientnet_lite0
    python -m benchmarks.scaling --gpu --no-her2st --sizes 1000 5000 20000 50000
    python -m benchmarks.scaling --quick              # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
import warnings
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

STAGES = ("ingestion", "embedding", "graph", "train", "evaluation")
TABLES = ("stages", "fixed-reference", "reference-count")
SPACING_PX = 200.0  # Visium: 100 um centre to centre at about 0.5 um / px
TILE = 512


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000], help="spots per generated section")
    parser.add_argument("--genes", type=int, default=785, help="genes of generated sections (the HER2+ panel size)")
    parser.add_argument(
        "--dim",
        type=int,
        default=None,
        help="random feature width (default 1280 = EfficientNet-Lite0; 1024 = UNI with --gpu)",
    )
    parser.add_argument("--encoder", default=None, help="time this encoder on a patch sample of generated sections")
    parser.add_argument("--encoder-sample", type=int, default=None, help="patches timed (default 128, 512 with --gpu)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="patch-decoding workers of the encoder sample (default: embedding.num_workers; min(8, cores) with --gpu)",
    )
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES), help="which tables to measure")
    parser.add_argument(
        "--target-sizes",
        type=int,
        nargs="+",
        default=[1000, 5000, 20000, 50000],
        help="target section sizes of the fixed-reference table",
    )
    parser.add_argument(
        "--fixed-ref-size",
        type=int,
        default=None,
        help="spots per training section of the fixed-reference table (default 2500 on CPU, 5000 with --gpu)",
    )
    parser.add_argument(
        "--fixed-ref-sections", type=int, default=2, help="training sections of the fixed-reference table"
    )
    parser.add_argument(
        "--fixed-dim",
        type=int,
        default=None,
        help="feature width of the fixed-reference table (default 256 on CPU, 1024 = UNI with --gpu)",
    )
    parser.add_argument("--ref-counts", type=int, nargs="+", default=[2, 3, 4, 6], help="training sections per fold")
    parser.add_argument("--ref-size", type=int, default=1000, help="spots per section for the reference-count sweep")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads during the training epoch")
    parser.add_argument("--no-her2st", action="store_true", help="skip the real HER2+ sections")
    parser.add_argument(
        "--gpu", action="store_true", help="CUDA + UNI's architecture (random weights); skipped without CUDA"
    )
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


@lru_cache(maxsize=1)
def encoded_tiles() -> tuple[bytes, ...]:
    """Four H&E-coloured noise tiles, zlib-encoded once: compressing every tile of a 50k-spot
    image (about 7,000 tiles) would take minutes, writing pre-encoded ones takes seconds."""
    rng = np.random.default_rng(0)
    tiles = [(np.array([215, 150, 200]) * rng.random((TILE, TILE, 1)) * 0.4 + 130).astype(np.uint8) for _ in range(4)]
    return tuple(zlib.compress(tile.tobytes(), 6) for tile in tiles)


def write_tiff(path: Path, width: int, height: int) -> None:
    """A tiled, zlib-compressed H&E-coloured TIFF written tile by tile (never held whole in memory)."""
    import tifffile

    tiles = encoded_tiles()
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


def simulated_counts(xy: np.ndarray, n_genes: int, rng: np.random.Generator) -> Any:
    """Spots x genes Poisson counts (CSR) driven by a few smooth spatial programs, so expression is structured like tissue."""
    import scipy.sparse as sp

    waves = rng.normal(size=(4, 2)) / (SPACING_PX * 8)
    programs = np.sin(xy @ waves.T + rng.uniform(0, 6, 4))
    rate = np.exp(rng.uniform(-2.5, 0.5, n_genes) + programs @ rng.normal(0, 0.6, (4, n_genes)))
    return sp.csr_matrix(rng.poisson(rate).astype(np.float32))


def gene_names(n_genes: int) -> list[str]:
    """Symbols of the generated genes."""
    return [f"GENE{g:04d}" for g in range(n_genes)]


def write_visium_section(folder: Path, n_spots: int, n_genes: int, seed: int, image: Path | None = None) -> Path:
    """One generated section in the Space Ranger layout; returns its image path.

    `image`: an existing image of the same grid size, hard-linked (copied where links fail)
    instead of written again.
    """
    import scipy.io

    rng = np.random.default_rng(seed)
    xy, rowcol = hex_positions(n_spots)
    spatial = folder / "spatial"
    matrix_dir = folder / "filtered_feature_bc_matrix"
    spatial.mkdir(parents=True, exist_ok=True)
    matrix_dir.mkdir(parents=True, exist_ok=True)
    barcodes = [f"S{seed}-{i:06d}-1" for i in range(n_spots)]
    counts = simulated_counts(xy, n_genes, rng)
    scipy.io.mmwrite(str(matrix_dir / "matrix.mtx"), counts.T.tocoo(), field="integer")
    (matrix_dir / "features.tsv").write_text("".join(f"{g}\t{g}\tGene Expression\n" for g in gene_names(n_genes)))
    (matrix_dir / "barcodes.tsv").write_text("".join(f"{b}\n" for b in barcodes))
    lines = [f"{b},1,{r},{c},{y:.1f},{x:.1f}\n" for b, (r, c), (x, y) in zip(barcodes, rowcol, xy, strict=True)]
    (spatial / "tissue_positions_list.csv").write_text("".join(lines))
    (spatial / "scalefactors_json.json").write_text(json.dumps({"spot_diameter_fullres": 0.55 * SPACING_PX}))
    path = folder / "image.tif"
    path.unlink(missing_ok=True)
    if image is None:
        width, height = (xy.max(axis=0) + 2 * SPACING_PX).astype(int)
        write_tiff(path, int(width), int(height))
    else:
        try:
            os.link(image, path)
        except OSError:
            shutil.copyfile(image, path)
    return path


def generated_dataset(root: Path, n_spots: int, n_sections: int, n_genes: int) -> Path:
    """A folder of n_sections generated sections (written once, reused) and its gene list.

    Sections of one size share the grid, so they share one image file (hard links). Large
    sections are written by parallel processes (counts and Matrix Market text dominate).
    """
    from concurrent.futures import ProcessPoolExecutor

    raw = root / f"visium_{n_spots}x{n_sections}_{n_genes}g"
    done = raw / ".complete"
    if not done.exists():
        image = write_visium_section(raw / "G0", n_spots, n_genes, seed=0)
        rest = [(raw / f"G{index}", n_spots, n_genes, index, image) for index in range(1, n_sections)]
        workers = min(len(rest), os.cpu_count() or 1) if n_spots >= 10_000 else 1
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(write_visium_section, *zip(*rest, strict=True)))
        else:
            for task in rest:
                write_visium_section(*task)
        (raw / "genes.txt").write_text("".join(f"{g}\n" for g in gene_names(n_genes)))
        done.touch()
    return raw


def generated_section(n_spots: int, n_genes: int, seed: int) -> Any:
    """An in-memory generated section (counts, spot ids, gene symbols, pixel positions): no files."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    xy, _ = hex_positions(n_spots)
    section = ad.AnnData(X=simulated_counts(xy, n_genes, rng))
    section.obs_names = [f"S{seed}-{i:06d}-1" for i in range(n_spots)]
    section.var_names = gene_names(n_genes)
    section.obsm["spatial"] = xy
    return section


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


@lru_cache(maxsize=2)
def sample_encoder(name: str, gpu: bool) -> Any:
    """The encoder timed on patch samples, built once per run (UNI's ViT-L takes seconds to initialise)."""
    from spahgc_kedro import encoders

    if gpu:
        spec = encoders.REGISTRY["uni"]
        return encoders.Encoder(spec, encoders.create_architecture(spec).eval(), "random weights", "random")
    return encoders.build_encoder(name)


def time_encoder_sample(
    section: Any, name: str, device: Any, sample: int, gpu: bool, embedding: dict[str, Any], workers: int | None
) -> tuple[float, int, float]:
    """(seconds, patches, peak GPU MiB) to embed `sample` patches of one section with the project's
    patch reader and encoder loop, at the embedding parameters' batch size (and workers unless given)."""
    from spahgc_kedro import encoders
    from spahgc_kedro.patches import SpotPatches

    encoder = sample_encoder(name, gpu)
    rows = np.linspace(0, section.n_obs - 1, min(sample, section.n_obs)).astype(int)
    batch, workers = int(embedding["batch_size"]), int(embedding["num_workers"] if workers is None else workers)

    def patches(chosen: np.ndarray) -> Any:
        return SpotPatches(
            section.uns["image_path"], section.obsm["spatial"][chosen], patch_px=224, output_px=encoder.spec.input_px
        )

    encoders.encode_patches(encoder, patches(rows[:batch]), device, batch_size=batch, num_workers=0)
    with common.measure(cuda=device.type == "cuda") as m:
        encoders.encode_patches(encoder, patches(rows), device, batch_size=batch, num_workers=workers)
    if device.type == "cuda":
        # the encoder would otherwise stay on the GPU and count in every later stage's peak
        import torch

        encoder.model.to("cpu")
        torch.cuda.empty_cache()
    return m.seconds, len(rows), m.gpu_peak_mib


def retrieval_device(args) -> str:
    """The graph.retrieval_device the benchmark runs with: the torch path on CUDA with --gpu."""
    return "cuda" if args.gpu else "cpu"


def stage_params(args, dataset: str, raw: Path, gene_list: Path, first_section: str, device: Any) -> dict[str, Any]:
    """Runtime parameters of a stage run: one fold (tested on the first section), one epoch."""
    return {
        "dataset": dataset,
        "raw_dir": str(raw),
        "device": str(device),
        "datasets": {dataset: {"gene_panel": {"rule": "list", "path": str(gene_list)}}},
        "graph": {"fold": first_section, "retrieval_device": retrieval_device(args)},
        "train": {"epochs": 1, "threads": args.threads, "model": {"hidden": args.hidden}},
    }


def run_stages(raw: Path, params: dict[str, Any], args, device: Any, real: bool) -> dict[str, Any]:
    """Measure every stage's pipeline on one dataset folder; returns {stage: StageMeasure} and sizes."""
    cuda = device.type == "cuda"
    root = args.work_dir / "runs" / common.digest(params)
    shutil.rmtree(root, ignore_errors=True)  # fresh outputs: no cached embeddings, no earlier graphs
    catalog = common.project_catalog(root, **params)
    measures: dict[str, common.StageMeasure] = {}
    with common.measure(cuda=cuda) as m:
        common.run_pipelines(catalog, "ingestion")
    measures["ingestion"] = m
    sections = {s: load() for s, load in catalog.load("sections").items()}
    if real:
        with common.measure(cuda=cuda) as m:
            common.run_pipelines(catalog, "embedding")
        m.notes.append("efficientnet_lite0, measured on every spot")
    else:
        catalog.save("patch_embeddings", random_embeddings(sections, args.dim, 0))
        m = common.StageMeasure(seconds=float("nan"), notes=[f"random {args.dim}-d features (embedding not run)"])
        if args.encoder or args.gpu:
            m = encoder_sample_measure(sections, args, device, catalog.load("params:embedding"))
    measures["embedding"] = m
    for stage in ("graph", "train", "evaluation"):
        with common.measure(cuda=cuda) as m:
            common.run_pipelines(catalog, stage)
        measures[stage] = m
    spots = [a.n_obs for a in sections.values()]
    return {"measures": measures, "spots_per_section": int(np.median(spots)), "sections": len(spots)}


def encoder_sample_measure(sections: dict[str, Any], args, device: Any, embedding: dict[str, Any]) -> Any:
    """The embedding stage EXTRAPOLATED from the encoder timed on a patch sample of the first section."""
    first = sorted(sections)[0]
    name = "uni (vit_large_patch16_224, random weights, bf16)" if args.gpu else args.encoder
    seconds, n, gpu_peak = time_encoder_sample(
        sections[first], args.encoder or "uni", device, args.encoder_sample, args.gpu, embedding, args.workers
    )
    workers = embedding["num_workers"] if args.workers is None else args.workers
    m = common.StageMeasure(seconds=seconds / n * sum(a.n_obs for a in sections.values()), gpu_peak_mib=gpu_peak)
    m.notes.append(
        f"{name}: EXTRAPOLATED from {n} patches ({seconds:.1f} s, batch {embedding['batch_size']}, "
        f"{workers} patch-decoding workers), RSS not measured" + (", GPU peak of the sample" if args.gpu else "")
    )
    return m


def her2st_rows(args, device: Any) -> dict[str, Any] | None:
    """Stages on the real HER2+ sections (embedded afresh); None when the shared data is absent."""
    if not (common.HER2ST_RAW.exists() and common.HER2ST_GENES.exists()):
        print(f"HER2+ skipped: {common.HER2ST_RAW} or {common.HER2ST_GENES} is absent.")
        return None
    params = stage_params(args, "her2st", common.HER2ST_RAW, common.HER2ST_GENES, "C2", device)
    return run_stages(common.HER2ST_RAW, params, args, device, real=True)


def generated_rows(n_spots: int, n_sections: int, args, device: Any) -> dict[str, Any]:
    """Stages on n_sections generated sections of n_spots each."""
    raw = generated_dataset(args.work_dir / "raw", n_spots, n_sections, args.genes)
    params = stage_params(args, "visium", raw, raw / "genes.txt", "G0", device)
    return run_stages(raw, params, args, device, real=False)


def reference_sweep(args, device: Any) -> list[tuple[int, float, int]]:
    """(training sections, train stage seconds at one epoch, reference nodes of a training graph) per count."""
    rows = []
    for count in args.ref_counts:
        raw = generated_dataset(args.work_dir / "raw", args.ref_size, count + 2, args.genes)
        params = stage_params(args, "visium", raw, raw / "genes.txt", "G0", device)
        root = args.work_dir / "runs" / common.digest(params)
        shutil.rmtree(root, ignore_errors=True)
        catalog = common.project_catalog(root, **params)
        common.run_pipelines(catalog, "ingestion")
        sections = {s: load() for s, load in catalog.load("sections").items()}
        catalog.save("patch_embeddings", random_embeddings(sections, args.dim, 0))
        common.run_pipelines(catalog, "graph")
        with common.measure(cuda=device.type == "cuda") as m:
            common.run_pipelines(catalog, "train")
        fold = catalog.load("folds")["folds"]["G0"]
        graph = catalog.load("section_graphs")[f"G0/{fold['train'][0]}"]()
        rows.append((len(fold["train"]), m.seconds, int(graph["reference"].x.shape[0])))
    return rows


def graph_mib(data: Any) -> float:
    """Size of every tensor of a HeteroData (MiB)."""
    import torch

    return (
        sum(v.numel() * v.element_size() for store in data.stores for v in store.values() if torch.is_tensor(v)) / 2**20
    )


def fixed_reference_rows(args, device: Any) -> dict[str, Any]:
    """Build one target section's graph for each `--target-sizes` against the same training sections.

    With the graph pipeline's builder, `graph.FoldReferences`: fit the fold's references
    (standardisation, reference features), retrieve the target's neighbours in every
    training section, assemble its graph. The validation section only enters the fold's
    embedding standardisation.
    """
    import tracemalloc

    from spahgc_kedro.folds import make_folds
    from spahgc_kedro.graph import FoldReferences
    from spahgc_kedro.targets import fold_target_scaling, transformed_expression

    params = common.project_parameters(dataset="visium")
    graph = {**params["graph"], "retrieval_device": retrieval_device(args)}
    radius = float(params["datasets"]["visium"]["spatial_radius_spacings"]) * SPACING_PX
    args.work_dir.mkdir(parents=True, exist_ok=True)
    genes_file = args.work_dir / f"genes_{args.genes}.txt"
    genes_file.write_text("".join(f"{g}\n" for g in gene_names(args.genes)))
    fixed = {"V": generated_section(args.fixed_ref_size, args.genes, seed=100)}
    for index in range(args.fixed_ref_sections):
        fixed[f"R{index}"] = generated_section(args.fixed_ref_size, args.genes, seed=101 + index)
    rng = np.random.default_rng(0)
    fixed_x = {s: rng.normal(size=(a.n_obs, args.fixed_dim)).astype(np.float32) for s, a in fixed.items()}
    rows = []
    # the first build (100 target spots) is an untimed warm-up: imports would land in the first row
    for n in [100, *sorted(args.target_sizes)]:
        sections = {"T": generated_section(n, args.genes, seed=n), **fixed}
        embeddings = {"T": rng.normal(size=(n, args.fixed_dim)).astype(np.float32), **fixed_x}
        folds = make_folds([{"section_id": s, "patient_id": s} for s in sections], "leave_one_section_out", "T", "V")
        fold = folds["folds"]["T"]
        rule = {"rule": "list", "path": str(genes_file)}
        scaling = fold_target_scaling(sections, fold, rule, graph["target_transform"])

        def expression(section_id: str, genes: list[str], transform: str, sections: dict = sections) -> np.ndarray:
            return transformed_expression(sections[section_id], genes, transform)

        tracemalloc.start()
        with common.measure(cuda=device.type == "cuda") as m:
            references = FoldReferences.fit("T", fold, scaling, embeddings, expression, graph)
            start = time.perf_counter()
            references.retrieve("T", embeddings["T"])
            retrieval = time.perf_counter() - start
            retrieval_traced = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            target = sections["T"]
            data = references.build(
                "T",
                embeddings["T"],
                target.obsm["spatial"],
                radius,
                list(target.obs_names),
                "test",
                target_y=references.targets("T"),
            )
        assembly_traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append(
            {
                "spots": n,
                "retrieval": retrieval,
                "assembly": m.seconds - retrieval,
                "total": m.seconds,
                "reference_nodes": int(data["reference"].num_nodes),
                "graph_mib": graph_mib(data),
                "rss_mib": m.peak_growth_mib,
                "retrieval_traced_mib": retrieval_traced / 2**20,
                "assembly_traced_mib": assembly_traced / 2**20,
                "gpu_mib": m.gpu_peak_mib,
            }
        )
        del data, references, sections, embeddings
        print(f"fixed reference: {n} target spots done ({m.seconds:.1f} s)", flush=True)
    return {"rows": rows[1:], "graph": graph}


def tile_memory_line(block: int, k: int, gpu: bool) -> str:
    """The working memory a block size implies, per tile, for the path in use."""
    tile = block * block
    if gpu:
        return (
            f"block_size {block}: torch float32 tile {tile * 4 / 2**20:.0f} MiB + the stable sort's values and int64 "
            f"order over block x (block + k) {block * (block + k) * 12 / 2**20:.0f} MiB, about "
            f"{tile * 20 / 2**20:.0f} MiB of device memory at a time, whatever the sizes"
        )
    return (
        f"block_size {block}: scipy float64 tile {tile * 8 / 2**20:.0f} MiB, plus argpartition's int64 indices and "
        f"comparisons of the same shape: about {tile * 17 / 2**20:.0f} MiB at a time, whatever the sizes"
    )


def fixed_reference_table(result: dict[str, Any], args, device: Any, seconds: float) -> list[str]:
    """Markdown: graph construction of one target section against a fixed reference set, with log-log slopes."""
    rows, graph = result["rows"], result["graph"]
    gpu = device.type == "cuda"
    where = "torch path on CUDA (float32 tiles)" if gpu else "CPU (scipy float64 tiles, one process)"
    columns = [
        "retrieval",
        "assembly",
        "total",
        "reference_nodes",
        "graph_mib",
        "rss_mib",
        "retrieval_traced_mib",
        "assembly_traced_mib",
    ]
    headers = [
        "retrieval s",
        "assembly s",
        "total s",
        "reference nodes",
        "graph MiB",
        "peak RSS growth MiB",
        "retrieval numpy peak MiB",
        "assembly numpy peak MiB",
    ]
    if gpu:
        columns.append("gpu_mib")
        headers.append("GPU peak MiB")
    lines = [
        "### Graph construction vs target spots, fixed reference set"
        + (" (quick smoke run, not a result)" if args.quick else ""),
        "",
        f"- one target (test) section of n spots against the same {args.fixed_ref_sections} training sections of "
        f"{args.fixed_ref_size} spots (+ one {args.fixed_ref_size}-spot validation section, which only enters the "
        f"fold's embedding standardisation); Visium-like hexagonal grid, {args.genes} genes (Poisson counts)",
        f"- features: random {args.fixed_dim}-d"
        + (
            " (UNI's width)"
            if args.fixed_dim == 1024
            else " (UNI is 1024-d; narrower here so the CPU table runs in minutes; "
            "retrieval time is linear in the width)"
        )
        + ("" if gpu else "; on CPU the default reference set is 2 x 2500 spots (5000 with --gpu) for the same reason"),
        f"- retrieval = `FoldReferences.retrieve` over the {args.fixed_ref_sections} (target, training section) pairs; "
        "assembly = the rest of the graph pipeline's builder (`graph.FoldReferences`: the fold's standardisation and "
        "reference features, targets, merge, reference-close-reference kNN among the retrieved reference spots, "
        "spatial edges, HeteroData)",
        f"- graph parameters: k_refer {graph['k_refer']}, k_close {graph['k_close']}, metric {graph['metric']}, "
        f"retrieval on {where}",
        f"- {tile_memory_line(int(graph['block_size']), int(graph['k_refer']), gpu)}",
        "- memory: graph MiB = the HeteroData's tensors (O(n (dim + genes)) target features and targets, O(n k) edges, "
        "reference features bounded by the reference set); peak RSS growth over the whole build, sampled every 20 ms; "
        "numpy peaks = tracemalloc's peak of live numpy/scipy arrays during retrieval and during assembly (not torch's "
        "own allocations). Retrieval's peak is its tiles plus the O(n k) results; assembly's grows with n through the "
        "target features and targets (`targets.transformed_expression` makes dense float64 spots x genes temporaries)"
        + ("; GPU peak = torch.cuda.max_memory_allocated over the build" if gpu else ""),
        "- the reference-close-reference kNN costs O(r^2) in the r retrieved reference spots, which grows with n "
        "until it saturates at the reference set: it is the non-linear part of assembly at small n",
        f"- machine: {common.machine_line(str(device))}" + ("" if gpu else " (cores shared: timings are noisy)"),
        f"- wall time: {seconds:.0f} s (an untimed warm-up build first)",
        "",
        "| target spots | " + " | ".join(headers) + " |",
        "|---" + "|---" * len(headers) + "|",
    ]
    for row in rows:
        cells = [
            f"{row[c]:.2f}"
            if c in ("retrieval", "assembly", "total")
            else str(row[c])
            if c == "reference_nodes"
            else f"{row[c]:.0f}"
            for c in columns
        ]
        lines.append(f"| {row['spots']} | " + " | ".join(cells) + " |")
    if len(rows) >= 2:
        sizes = [row["spots"] for row in rows]
        slopes = [f"{common.log_log_slope(sizes, [row[c] for row in rows]):.2f}" for c in columns]
        lines.append(f"| growth exponent (log-log slope, {sizes[0]}..{sizes[-1]}) | " + " | ".join(slopes) + " |")
    return lines


def stage_cell(m: common.StageMeasure, gpu: bool) -> str:
    """`seconds (RSS MiB[ / GPU MiB])`, marking extrapolated figures."""
    extrapolated = any("EXTRAPOLATED" in note and not note.startswith("partly") for note in m.notes)
    partly = any(note.startswith("partly EXTRAPOLATED") for note in m.notes)
    if not np.isfinite(m.seconds):
        return "n/m"
    memory = "n/m" if extrapolated else f"{m.peak_growth_mib:.0f}"
    if gpu:
        memory += f" / {m.gpu_peak_mib:.0f}"
    mark = " (extrap.)" if extrapolated else " (part extrap.)" if partly else ""
    return f"{m.seconds:.2f}{mark} ({memory})"


def stage_table(
    results: list[tuple[str, dict[str, Any]]], generated: list[tuple[int, dict[str, Any]]], gpu: bool
) -> list[str]:
    """Markdown rows: seconds and peak RSS growth (and GPU peak) per stage, and the log-log slopes over generated sizes."""
    unit = "MiB RSS / GPU" if gpu else "MiB"
    lines = [
        "| data | spots/section x sections | " + " | ".join(f"{s} s ({unit})" for s in STAGES) + " |",
        "|---|---" + "|---" * len(STAGES) + "|",
    ]
    for label, result in results:
        cells = [stage_cell(result["measures"][stage], gpu) for stage in STAGES]
        lines.append(f"| {label} | {result['spots_per_section']} x {result['sections']} | " + " | ".join(cells) + " |")
    if len(generated) >= 2:
        sizes = [n for n, _ in generated]
        slope_t = [common.log_log_slope(sizes, [r["measures"][s].seconds for _, r in generated]) for s in STAGES]
        slope_m = [
            common.log_log_slope(sizes, [r["measures"][s].peak_growth_mib for _, r in generated]) for s in STAGES
        ]
        cells = [f"time {t:.2f}, mem {m:.2f}" for t, m in zip(slope_t, slope_m, strict=True)]
        if gpu:
            slope_g = [
                common.log_log_slope(sizes, [r["measures"][s].gpu_peak_mib for _, r in generated]) for s in STAGES
            ]
            cells = [f"{c}, GPU {g:.2f}" for c, g in zip(cells, slope_g, strict=True)]
        lines.append(
            f"| growth exponent (log-log slope, generated {sizes[0]}..{sizes[-1]}) | | " + " | ".join(cells) + " |"
        )
    return lines


def stages_section(args, device: Any, partial: Any = None) -> list[str]:
    """The per-stage table (HER2+ and generated sizes) with its header; `partial(lines)` after every row."""
    # an untimed pass first: library imports and first-call setup would otherwise land in the first row
    generated_rows(100, 4, args, device)
    start = time.perf_counter()
    results: list[tuple[str, dict[str, Any]]] = []
    if not args.no_her2st:
        her2st = her2st_rows(args, device)
        if her2st is not None:
            results.append(("HER2+ (real, patient C)", her2st))
    generated: list[tuple[int, dict[str, Any]]] = []
    for n in sorted(args.sizes):
        if partial:
            partial(
                stage_lines(results, generated, args, device, start) + ["", f"(PARTIAL: {n} spots/section running)"]
            )
        result = generated_rows(n, 4, args, device)
        generated.append((n, result))
        results.append((f"generated Visium-like ({args.genes} genes)", result))
        print(f"generated {n} spots/section done ({time.perf_counter() - start:.0f} s)", flush=True)
    return stage_lines(results, generated, args, device, start)


def stage_lines(
    results: list[tuple[str, dict[str, Any]]],
    generated: list[tuple[int, dict[str, Any]]],
    args,
    device: Any,
    start: float,
) -> list[str]:
    """The per-stage table with its header, from the rows measured so far."""
    gpu = device.type == "cuda"
    notes = sorted({note for _, r in results for m in r["measures"].values() for note in m.notes})
    memory = "MiB = peak RSS during the stage minus RSS at its start, sampled every 20 ms"
    if gpu:
        memory += " / peak torch.cuda.max_memory_allocated during the stage (absolute)"
    return [
        "### Scaling: time and peak memory per stage" + (" (quick smoke run, not a result)" if args.quick else ""),
        "",
        "- stages: each is the project's pipeline run on the project's catalog (outputs under the benchmark's work "
        "folder): ingestion (her2st layout / Space Ranger mtx + TIFF readers); embedding (see notes); graph = preset, "
        "folds, target scaling, retrieval and every graph of ONE leave-one-section-out fold (4 sections: test, "
        "validation, 2 training); train = the train pipeline with 1 epoch (2 training graphs + validation pass, test "
        "prediction, saving the model and predictions); evaluation = the evaluation pipeline (metrics, the 4 "
        "baselines, tables, figure)",
        "- generated sections: the 4 sections of one size share one tiled TIFF (hard links; same grid, same image size)",
        f"- model: hidden {args.hidden}, 4 layers, EMA teacher + contrastive loss, 1 epoch, torch threads {args.threads}; "
        f"device {device}"
        + (
            f"; graph.retrieval_device {retrieval_device(args)}"
            + (" (torch float32 tiles)" if gpu else " (scipy float64)")
        ),
        "- an untimed warm-up pass (4 x 100 spots) runs first, so imports are not timed",
        f"- cells: seconds ({memory}; n/m = not measured; (extrap.) / (part extrap.) = see notes)",
        f"- notes: {'; '.join(notes)}",
        f"- machine: {common.machine_line(str(device))}"
        + ("" if gpu else " (cores shared with other developers: timings are noisy)"),
        f"- wall time: {time.perf_counter() - start:.0f} s",
        "",
        *stage_table(results, generated, gpu),
    ]


def sweep_section(args, device: Any) -> list[str]:
    """Training-epoch time against the number of training sections."""
    sweep = reference_sweep(args, device)
    lines = [
        f"Train stage (the train pipeline, 1 epoch: training + validation pass + test prediction + saving) vs number of "
        f"training (reference) sections, {args.ref_size} spots each, {args.genes} genes, random {args.dim}-d features, "
        f"device {device}:",
        "",
        "| training sections | train stage, 1 epoch (s) | reference nodes in one training graph |",
        "|---|---|---|",
        *[f"| {count} | {seconds:.2f} | {nodes} |" for count, seconds, nodes in sweep],
    ]
    if len(sweep) >= 2:
        lines.append(
            f"| growth exponent | {common.log_log_slope([c for c, _, _ in sweep], [s for _, s, _ in sweep]):.2f} | |"
        )
    return lines


def main(argv: list[str] | None = None) -> str:
    """Run the measurements and print the tables (written to --out after each table and stage row)."""
    import torch

    from spahgc_kedro.encoders import select_device

    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.quick:
        args.sizes, args.genes, args.dim, args.hidden = [100, 200], 30, 32, 16
        args.ref_counts, args.ref_size, args.no_her2st = [2, 3], 100, True
        args.target_sizes, args.fixed_ref_size, args.fixed_dim = [100, 300], 200, 16
        args.encoder_sample = args.encoder_sample or 16
    if args.gpu and not torch.cuda.is_available():
        print("--gpu: skipped, torch sees no CUDA device on this machine (the CPU measurements still run).")
        args.gpu = False
    args.dim = args.dim or (1024 if args.gpu else 1280)
    args.fixed_dim = args.fixed_dim or (1024 if args.gpu else 256)
    args.fixed_ref_size = args.fixed_ref_size or (5000 if args.gpu else 2500)
    args.encoder_sample = args.encoder_sample or (512 if args.gpu else 128)
    if args.workers is None and args.gpu:
        args.workers = min(8, os.cpu_count() or 1)
    device = select_device("cuda" if args.gpu else "cpu")
    done: dict[str, list[str]] = {}

    def render(extra: dict[str, list[str]] | None = None) -> str:
        parts = {**done, **(extra or {})}
        return "\n\n".join("\n".join(parts[name]) for name in TABLES if name in parts)

    def write(text: str) -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")

    # the short tables first, so that a run cut short by a time limit keeps them
    if "fixed-reference" in args.tables:
        start = time.perf_counter()
        result = fixed_reference_rows(args, device)
        done["fixed-reference"] = fixed_reference_table(result, args, device, time.perf_counter() - start)
        write(render())
    if "reference-count" in args.tables:
        done["reference-count"] = sweep_section(args, device)
        write(render())
    if "stages" in args.tables:
        done["stages"] = stages_section(args, device, partial=lambda lines: write(render({"stages": lines})))
    table = render()
    print(table)
    write(table)
    if args.out:
        print(f"\nwritten to {args.out}")
    return table


if __name__ == "__main__":
    main()

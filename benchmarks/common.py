"""Shared helpers of the benchmark scripts: project parameters, the pipeline stages as
plain calls of the project's node functions, and the machine description every table states.

The stages call the nodes of the ingestion, embedding and graph pipelines directly (no
catalog), so a benchmark never writes into the pipelines' `data/0*` folders; embeddings
are cached under a benchmark work dir (default `data/benchmarks/`, git-ignored).
"""

from __future__ import annotations

import os
import platform
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
HER2ST_RAW = SHARED / "her2st"
HER2ST_GENES = SHARED / "gene_lists" / "her_hvg_cut_1000.npy"
WORK_DIR = REPO / "data" / "benchmarks"


def project_parameters(dataset: str, raw_dir: str | Path) -> dict[str, Any]:
    """The project's parameters (conf/base) as `kedro run --params dataset:...,raw_dir:...` would see them."""
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(
        conf_source=str(REPO / "conf"),
        base_env="base",
        default_run_env="local",
        runtime_params={"dataset": dataset, "raw_dir": str(raw_dir)},
    )
    return loader["parameters"]


def cpu_model() -> str:
    """CPU model name and logical core count from /proc/cpuinfo (platform fallback)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        if names:
            return f"{names[0]} x {len(names)} logical cores (os.cpu_count {os.cpu_count()})"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x {os.cpu_count()} cores"


def machine_line(device: str) -> str:
    """One line naming the CPU, torch version and threads, and the torch device used."""
    import torch

    return f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; device {device}"


def peak_rss_mib() -> float:
    """This process's maximum resident set size so far (MiB, from getrusage)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """This process's current resident set size (MiB, from /proc/self/statm)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


@dataclass
class StageMeasure:
    """Wall time and memory of one stage: peak RSS sampled during it, its growth over the
    start, and (CUDA only) the peak of torch's allocated GPU memory during it."""

    seconds: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)
    gpu_peak_mib: float = float("nan")

    @property
    def peak_growth_mib(self) -> float:
        """Peak RSS during the stage minus RSS at its start (what the stage itself needed, roughly)."""
        return max(self.peak_rss_mib - self.rss_before_mib, 0.0)


@contextmanager
def measure(interval: float = 0.02, cuda: bool = False) -> Iterator[StageMeasure]:
    """Time a block and sample this process's RSS (/proc/self/statm) every `interval` s in a thread.

    RSS covers numpy, torch and every native allocation, unlike tracemalloc; short spikes
    between two samples can be missed. `cuda`: synchronise before and after (so queued
    kernels are timed) and record `torch.cuda.max_memory_allocated` over the block.
    """
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = StageMeasure(rss_before_mib=current_rss_mib())
    result.peak_rss_mib = result.rss_before_mib
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result.peak_rss_mib = max(result.peak_rss_mib, current_rss_mib())
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        if cuda:
            torch.cuda.synchronize()
            result.gpu_peak_mib = torch.cuda.max_memory_allocated() / 2**20
        result.seconds = time.perf_counter() - start
        stop.set()
        thread.join()
        result.peak_rss_mib = max(result.peak_rss_mib, current_rss_mib())


def read_raw_sections(raw_dir: str | Path, preset: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ingestion stage: the project's readers -> {section_id: standard AnnData} and the manifest."""
    from spahgc_kedro.pipelines.ingestion.nodes import describe_sections, read_sections, select_sections

    ids = select_sections(str(raw_dir), preset)
    sections = read_sections(str(raw_dir), preset, ids)
    return sections, describe_sections(sections, preset)


def embed_with_cache(
    sections: dict[str, Any],
    encoder: str,
    device: str,
    seed: int,
    embedding: dict[str, Any],
    cache_dir: Path,
) -> dict[str, Any]:
    """Embedding stage: the embedding node with an on-disk cache of h5ad files keyed by content."""
    import anndata as ad

    from spahgc_kedro.pipelines.embedding.nodes import embed_sections

    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = {p.stem: (lambda p=p: ad.read_h5ad(p)) for p in cache_dir.glob("*.h5ad")}
    lazy = embed_sections(sections, cached, encoder, device, seed, embedding)
    embeddings = {}
    for section_id, load in lazy.items():
        adata = load()
        path = cache_dir / f"{section_id}.h5ad"
        key = adata.uns["encoder"]["content_key"]
        if section_id not in cached or cached[section_id]().uns["encoder"]["content_key"] != key:
            adata.write_h5ad(path)
        embeddings[section_id] = adata
    return embeddings


def build_graphs(
    sections: dict[str, Any],
    embeddings: dict[str, Any],
    manifest: dict[str, Any],
    params: dict[str, Any],
    dataset: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Graph stage: folds, target scaling and every `<fold>/<section>` HeteroData, built eagerly."""
    from spahgc_kedro.pipelines.graph.nodes import build_section_graphs, fit_target_scaling, make_fold_plan

    loaders = {sid: (lambda a=a: a) for sid, a in sections.items()}
    embedding_loaders = {sid: (lambda a=a: a) for sid, a in embeddings.items()}
    folds = make_fold_plan(manifest, params["graph"])
    scaling = fit_target_scaling(loaders, manifest, folds, params["datasets"], dataset, params["graph"])
    builders = build_section_graphs(
        loaders, embedding_loaders, manifest, folds, scaling, params["datasets"], dataset, params["graph"]
    )
    return folds, scaling, {key: build() for key, build in builders.items()}


def log_log_slope(sizes: list[float], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(size): the growth exponent (NaN with < 2 usable points)."""
    pairs = [(s, v) for s, v in zip(sizes, values, strict=True) if s > 0 and v > 0 and np.isfinite(v)]
    if len(pairs) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds) of a zero-argument call."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start

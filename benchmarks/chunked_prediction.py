"""Peak memory and time of predicting one section: the whole graph at once vs in chunks of spots.

Each (spots, chunk) runs in a fresh process on a generated graph shaped like the project's: target
spots on a square grid with their spatial neighbours, two reference sections of as many spots each,
`k_refer` retrieved references per target spot and `k_close` neighbours per reference, the default
architecture (hidden 256, 4 layers, 4 heads) with random weights. Peak RSS is the process's maximum
resident set size after the prediction, less its size before (inputs and model included in neither).

    python -m benchmarks.chunked_prediction --out benchmarks/results/chunked_prediction.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks import common

SIZES = (5_000, 20_000, 50_000)
CHUNK = 5_000
DIM, GENES, K_REFER, K_CLOSE = 512, 250, 7, 3


def one_run(spots: int, chunk: int) -> dict[str, float]:
    """Predict one generated section (in this process) and report seconds and peak RSS growth."""
    import numpy as np
    import torch
    from torch_geometric.data import HeteroData

    from spahgc_kedro.graph import spatial_edges
    from spahgc_kedro.model import SpaHGC, predict
    from spahgc_kedro.model.spahgc import REFERENCE_EDGES, REFERENCE_NEIGHBOUR_EDGES, SPATIAL_EDGES

    torch.manual_seed(0)
    torch.set_num_threads(1)
    side = int(np.ceil(np.sqrt(spots)))
    grid = np.stack(np.divmod(np.arange(spots), side), axis=1).astype(np.float64)
    references = 2 * spots
    graph = HeteroData()
    graph["target"].x = torch.randn(spots, DIM)
    graph["reference"].x = torch.randn(references, DIM + GENES)
    graph[SPATIAL_EDGES].edge_index = torch.as_tensor(spatial_edges(grid, 1.5, 8), dtype=torch.long)
    refer_target = torch.arange(spots).repeat_interleave(K_REFER)
    graph[REFERENCE_EDGES].edge_index = torch.stack([torch.randint(0, references, (spots * K_REFER,)), refer_target])
    close_reference = torch.arange(references).repeat_interleave(K_CLOSE)
    close = torch.randint(0, references, (references * K_CLOSE,))
    graph[REFERENCE_NEIGHBOUR_EDGES].edge_index = torch.stack([close, close_reference])
    model = SpaHGC(DIM, GENES)
    before = common.peak_rss_mib()
    start = time.perf_counter()
    predicted = predict(model, graph, chunk_spots=chunk)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_growth_mib": common.peak_rss_mib() - before,
        "checksum": float(np.abs(predicted).sum()),
    }


def torch_version() -> str:
    """The installed torch version (without importing torch in the parent process)."""
    from importlib.metadata import version

    return version("torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(*args.one)))
        return
    rows = [
        "| target spots | whole graph: s | whole graph: peak RSS growth (MiB) | "
        f"chunks of {args.chunk:,}: s | chunks: peak RSS growth (MiB) | same predictions |",
        "|---|---|---|---|---|---|",
    ]
    for spots in args.sizes:
        runs = {}
        for chunk in (0, args.chunk):
            command = [sys.executable, "-m", "benchmarks.chunked_prediction", "--one", str(spots), str(chunk)]
            output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=common.REPO).stdout
            runs[chunk] = json.loads(output.strip().splitlines()[-1])
        whole, chunked = runs[0], runs[args.chunk]
        same = abs(whole["checksum"] - chunked["checksum"]) <= 1e-4 * abs(whole["checksum"])
        rows.append(
            f"| {spots:,} | {whole['seconds']:.1f} | {whole['peak_growth_mib']:.0f} | {chunked['seconds']:.1f} | "
            f"{chunked['peak_growth_mib']:.0f} | {'yes' if same else 'NO'} |"
        )
        print(rows[-1], flush=True)
    header = [
        "### Predicting one section: whole graph vs chunks of spots (`prediction_chunk_spots`)",
        "",
        f"- generated graphs: {DIM}-d spot features, {GENES} genes, 2 reference spots per target spot, "
        f"{K_REFER} references per target spot, {K_CLOSE} neighbours per reference, up to 8 spatial "
        "neighbours; default architecture (hidden 256, 4 layers, 4 heads), random weights, eval mode",
        "- measured, one process per cell, 1 torch thread; peak RSS growth = max RSS after the prediction "
        "less before it; same predictions = sums of |prediction| agree to 1e-4 (the tests check equality per "
        "value on small graphs)",
        f"- machine: {common.cpu_model()}; torch {torch_version()}, 1 thread per run; device cpu",
        "",
    ]
    common.write_table("\n".join([*header, *rows]), args.out and common.REPO / args.out)


if __name__ == "__main__":
    main()

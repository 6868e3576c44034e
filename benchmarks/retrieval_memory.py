"""Peak memory and time of blocked cross-section retrieval.

Default: 50,000 queries x 200,000 candidates of 64-d features, k = 7 (the 2 GB budget
of the graph stage). Smaller runs: python -m benchmarks.retrieval_memory 5000 20000
Prints the traced numpy peak (tracemalloc) and the process's max RSS.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from spahgc_kedro.graph import nearest_neighbours


def main() -> None:
    """Run one retrieval and print its memory and time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queries", type=int, nargs="?", default=50_000)
    parser.add_argument("candidates", type=int, nargs="?", default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--metric", default="l1", choices=["l1", "cosine"])
    parser.add_argument("--block-size", type=int, default=2048)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    queries = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    candidates = rng.normal(size=(args.candidates, args.dim)).astype(np.float32)
    tracemalloc.start()
    start = time.perf_counter()
    nearest_neighbours(queries, candidates, args.k, args.metric, args.block_size)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    inputs = (queries.nbytes + candidates.nbytes) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(
        f"{args.queries} x {args.candidates} x {args.dim}-d, k={args.k}, {args.metric}, "
        f"block {args.block_size}: {seconds:.1f} s, traced peak {peak / 2**20:.0f} MiB "
        f"(inputs {inputs:.0f} MiB), max RSS {rss:.0f} MiB; a full distance matrix would "
        f"be {args.queries * args.candidates * 8 / 2**30:.1f} GiB"
    )


if __name__ == "__main__":
    main()

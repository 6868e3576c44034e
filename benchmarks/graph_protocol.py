"""Disk and time of the graph stage for the paper's full protocol: leave-one-section-out over 32 sections.

32 generated sections of HER2+ size (Space Ranger layout, ingested by the project's Visium
reader; random `--dim`-d embeddings in place of an encoder) go through the project's graph
pipeline with `graph.fold` = the first section (one fold: its 32 section graphs; `--fold all`
runs all 32 folds). The store keeps each section once and per fold only its links, so the
full protocol's size is the sections plus 32 times one fold's links: measured for the folds
run, EXTRAPOLATED (and labelled so) for the rest. For comparison, the one-file-per-graph
layout the store replaced would hold every graph's tensors: summed over the measured folds'
assembled graphs and extrapolated the same way. Time for the folds not run is bounded above
by the measured per-fold time (retrieval, computed once per section pair, is shared by all
folds, so the real total is lower).

    python -m benchmarks.graph_protocol                 # 32 x 600 spots, one fold measured
    python -m benchmarks.graph_protocol --fold all      # every fold (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=int, default=32, help="sections of the protocol (HER2+: 32)")
    parser.add_argument("--spots", type=int, default=600, help="spots per section (HER2+ size)")
    parser.add_argument("--genes", type=int, default=785, help="genes (the HER2+ panel size)")
    parser.add_argument("--dim", type=int, default=1024, help="embedding width (UNI: 1024)")
    parser.add_argument("--fold", default=None, help="fold to run (default: the first section; 'all': every fold)")
    parser.add_argument("--work-dir", type=Path, default=common.WORK_DIR / "graph_protocol")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def folder_mib(path: Path) -> float:
    """Size of every file under `path` (MiB)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def measure_protocol(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest the generated sections, store random embeddings, then measure the graph stage and its store."""
    from benchmarks.scaling import generated_dataset, graph_mib, random_embeddings

    raw = generated_dataset(args.work_dir / "raw", args.spots, args.sections, args.genes)
    fold = args.fold or "G0"
    params = {
        "dataset": "visium",
        "raw_dir": str(raw),
        "datasets": {"visium": {"gene_panel": {"rule": "list", "path": str(raw / "genes.txt")}}},
        "graph": {"fold": fold},
    }
    root = args.work_dir / "run"
    shutil.rmtree(root, ignore_errors=True)
    catalog = common.project_catalog(root, **params)
    common.run_pipelines(catalog, "ingestion")
    sections = {s: load() for s, load in catalog.load("sections").items()}
    catalog.save("patch_embeddings", random_embeddings(sections, args.dim, 0))
    del sections
    with common.measure() as m:
        common.run_pipelines(catalog, "graph")
    store = next(root.rglob("section_graphs"))
    graphs = catalog.load("section_graphs")
    folds = catalog.load("folds")["folds"]
    return {
        "folds_run": len(folds),
        "graphs": len(graphs),
        "measure": m,
        "sections_mib": folder_mib(store / "sections"),
        "links_mib": folder_mib(store / "folds"),
        "store_mib": folder_mib(store),
        "graph_files_mib": sum(graph_mib(graphs[key]()) for key in graphs),
    }


def report(row: dict[str, Any], args: argparse.Namespace) -> str:
    """The table: measured folds, and the full protocol extrapolated from them."""
    m, run, total = row["measure"], row["folds_run"], args.sections
    scale = total / run
    full_store = row["sections_mib"] + row["links_mib"] * scale
    measured = "MEASURED" if run == total else f"EXTRAPOLATED from {run} measured fold(s) x {scale:g}"
    lines = [
        "### Graph stage for the full leave-one-section-out protocol (CPU)",
        "",
        f"- data: {args.sections} generated Visium-layout sections of {args.spots:,} spots (HER2+ size), "
        f"{args.genes} genes, random {args.dim}-d embeddings (UNI's width); default graph parameters (k_refer 7, "
        "k_close 3, L1)",
        f"- protocol: leave-one-section-out, {total} folds of {total} section graphs each ({total * total:,} graphs); "
        f"{run} fold(s) run through `kedro run --pipeline=graph`",
        "- store: `section_graphs` as the catalog writes it (each section once, per fold only the links); "
        "one-file-per-graph: the tensors of every assembled graph (the layout the store replaced)",
        "- time: the graph stage (retrieval, links, store); for the folds not run, at most the measured time per fold "
        "(retrieval is shared by every fold)",
        f"- machine: {common.cpu_model()}",
        "",
        f"| | measured folds (MEASURED) | full protocol ({measured}) |",
        "|---|---|---|",
        f"| folds x graphs | {run} x {total} | {total} x {total} |",
        f"| sections, stored once (MiB) | {row['sections_mib']:,.1f} | {row['sections_mib']:,.1f} |",
        f"| per-fold links (MiB) | {row['links_mib']:,.1f} | {row['links_mib'] * scale:,.1f} |",
        f"| graph store on disk (MiB) | {row['store_mib']:,.1f} | {full_store:,.1f} |",
        f"| one file per graph, as before (MiB) | {row['graph_files_mib']:,.1f} | {row['graph_files_mib'] * scale:,.1f} |",
        f"| graph stage s | {m.seconds:,.0f} | at most {m.seconds * scale:,.0f} |",
        f"| graph stage peak RSS (MiB) | {m.peak_rss_mib:,.0f} | |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    table = report(common.in_fresh_process(measure_protocol, args), args)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return table


if __name__ == "__main__":
    main()

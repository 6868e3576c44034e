"""The graph stage's `SectionGraphs` on disk: each section once, each fold's links beside it (design.md §3).

Layout under `path`:
- `store.json`: format, folds' plans, the expression genes, and per fold its panel and transform;
- `sections/<section>/`: `embedding.npy`, `expression.npy`, `positions.npy`, `near_edges.npy`,
  `spot_ids.json` (read memory-mapped: a graph reads only the reference rows it uses);
- `folds/<fold>/standardisation.npz` (mean, std, min, max) and `folds/<fold>/<section>.npz` (links).

A new store is written beside the old one and replaces it only once complete; sections and
folds no longer in the run go with the old store, as they are never used.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset

from spahgc_kedro.errors import InputDataError
from spahgc_kedro.spill import drop_resident_pages

FORMAT = "spahgc-section-graphs/1"
SECTION_ARRAYS = ("embedding", "expression", "positions", "near_edges")
# Indices are stored as int32 (sections and reference sets hold far fewer than 2**31 spots).
LINK_ARRAYS = ("section_index", "spot_index", "refer_source", "close_edges")


class SectionGraphStore(AbstractDataset):
    """Saves and loads `graph_store.SectionGraphs` in a local folder, the sections stored once for all folds."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "format": FORMAT}

    def _exists(self) -> bool:
        return (self._path / "store.json").is_file()

    def _load(self) -> Any:
        from spahgc_kedro.graph_store import SectionGraphs

        index = self._path / "store.json"
        if not index.is_file():
            older = self._path.is_dir() and any(self._path.rglob("*.pt"))
            reason = "holds one .pt file per graph, the layout of an older version" if older else "does not exist"
            raise InputDataError(
                f"'{self._path}' {reason}: run `kedro run --pipeline=graph` with the same params to write the "
                "section graphs."
            )
        store = json.loads(index.read_text())
        if store.get("format") != FORMAT:
            raise InputDataError(
                f"'{index}' is format {store.get('format')!r}, not {FORMAT!r}: re-run `kedro run --pipeline=graph`."
            )
        return SectionGraphs(
            store["plans"],
            store["genes"],
            section=partial(_read_section, self._path),
            fold=partial(_read_fold, self._path, store["folds"]),
            links=partial(_read_links, self._path),
        )

    def _save(self, data: Any) -> None:
        from spahgc_kedro.progress import progress

        staging = self._path.with_name(f"{self._path.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for section_id in progress(data.sections(), desc="store sections", unit="section"):
                _write_section(staging / "sections" / section_id, data.section(section_id))
            folds = {}
            keys = [key.split("/", 1) for key in data]
            for name, section_id in progress(keys, desc="store graph links", unit="graph"):
                if name not in folds:
                    fold = data.fold(name)
                    folds[name] = {"genes": list(fold["genes"]), "transform": fold["transform"]}
                    (staging / "folds" / name).mkdir(parents=True, exist_ok=True)
                    np.savez(
                        staging / "folds" / name / "standardisation.npz",
                        **{key: np.asarray(fold[key], dtype=np.float32) for key in ("mean", "std", "min", "max")},
                    )
                _write_links(staging / "folds" / name / f"{section_id}.npz", data.links(name, section_id))
            store = {"format": FORMAT, "plans": data.plans, "genes": data.genes, "folds": folds}
            (staging / "store.json").write_text(json.dumps(store, indent=1))
            if self._path.exists():
                shutil.rmtree(self._path)
            staging.rename(self._path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _write_section(folder: Path, parts: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in SECTION_ARRAYS:
        values = np.asarray(parts[name])
        np.save(folder / f"{name}.npy", values.astype(np.int32) if name == "near_edges" else values)
        # a spilled embedding is read whole to be written: let its pages go, or every section stays resident
        drop_resident_pages(values)
    (folder / "spot_ids.json").write_text(json.dumps(list(parts["spot_ids"])))


def _read_section(root: Path, section_id: str) -> dict[str, Any]:
    folder = root / "sections" / section_id
    parts: dict[str, Any] = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in SECTION_ARRAYS}
    path = folder / "spot_ids.json"
    parts["spot_ids"] = _spot_ids(path, path.stat().st_mtime_ns)
    return parts


@lru_cache(maxsize=8)
def _spot_ids(path: Path, mtime_ns: int) -> tuple[str, ...]:
    """A section's spot ids, parsed once per file version: tiles of a large section read its parts many times."""
    return tuple(json.loads(path.read_text()))


def _read_fold(root: Path, records: dict[str, Any], name: str) -> dict[str, Any]:
    with np.load(root / "folds" / name / "standardisation.npz") as arrays:
        return {**records[name], **{key: arrays[key] for key in arrays.files}}


def _write_links(path: Path, links: dict[str, Any]) -> None:
    np.savez(
        path,
        reference_sections=np.asarray(links["reference_sections"], dtype=str),
        **{name: np.asarray(links[name]).astype(np.int32) for name in LINK_ARRAYS},
    )


def _read_links(root: Path, name: str, section_id: str) -> dict[str, Any]:
    with np.load(root / "folds" / name / f"{section_id}.npz") as arrays:
        links: dict[str, Any] = {name: arrays[name].astype(np.int64) for name in LINK_ARRAYS}
        links["reference_sections"] = [str(s) for s in arrays["reference_sections"]]
    return links

"""Spilled arrays: equal to what was spilled, held as read-only file pages; and the graph stage's scans let go of
the pages they read, so a 400,000-bin section's 1.6 GB is not left in the process's RSS once read (issue #14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spahgc_kedro.spill import drop_resident_pages, spilled
from tests.helpers.memory import anonymous_mib, on_linux, resident_file_mib


def spilled_rows(mib: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`mib` MiB of float32 rows `width` wide, and their spilled copy (none of its pages read yet)."""
    values = np.random.default_rng(seed).standard_normal((mib * 2**20 // 4 // width, width), dtype=np.float32)
    return values, spilled(values)


@on_linux
def test_spilled_values_are_equal_and_held_as_file_pages_not_as_anonymous_memory(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mib = 64
    values = np.random.default_rng(0).standard_normal((mib * 2**20 // 4 // 256, 256), dtype=np.float32)
    anonymous_before = anonymous_mib()
    held = spilled(values)
    assert float(held.sum(dtype=np.float64)) == pytest.approx(float(values.sum(dtype=np.float64)))  # every page read
    # before the equality check: its [N, 256] boolean temporary can stay in the allocator's heap
    assert anonymous_mib() - anonymous_before < 0.25 * mib
    assert held.dtype == values.dtype and held.shape == values.shape and np.array_equal(held, values)
    assert list(tmp_path.iterdir()) == []  # unlinked: nothing is left behind
    with pytest.raises(ValueError, match="read-only"):  # so letting its pages go can never lose a write
        held[0, 0] = 1e6
    assert spilled(values[:0]).shape == (0, 256)


def test_spilling_to_a_full_disk_names_the_folder_and_the_fix(tmp_path, monkeypatch):
    import errno
    import tempfile

    class FullDisk:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(tempfile, "TemporaryFile", FullDisk)
    with pytest.raises(
        OSError,
        match=rf"hold 3 MiB of embeddings .* under '{tmp_path}' .*No space left.*point TMPDIR at a disk with room",
    ):
        spilled(np.ones((3 * 2**18, 1), dtype=np.float32))


@on_linux
def test_dropping_a_spilled_arrays_pages_takes_them_out_of_rss_and_its_values_read_back_the_same():
    mib = 64
    values, held = spilled_rows(mib, 256)
    before = resident_file_mib()
    assert float(held.sum(dtype=np.float64)) == pytest.approx(float(values.sum(dtype=np.float64)))
    assert resident_file_mib() - before > 0.75 * mib  # every page read is resident
    drop_resident_pages(held[5:9])  # any view of the mapping lets all of it go
    assert resident_file_mib() - before < 0.25 * mib
    assert np.array_equal(held, values)


def test_arrays_that_are_writeable_or_not_mapped_are_left_alone(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    in_memory = values.copy()
    drop_resident_pages(in_memory)
    assert np.array_equal(in_memory, values)
    in_memory.flags.writeable = False
    drop_resident_pages(in_memory)  # read-only but held in memory: nothing to let go
    drop_resident_pages(np.frombuffer(values.tobytes(), dtype=np.float32))
    np.save(tmp_path / "values.npy", values)
    copy_on_write = np.load(tmp_path / "values.npy", mmap_mode="c")
    copy_on_write[0, 0] = 1e6
    drop_resident_pages(copy_on_write)  # would revert the write to the file's value
    assert copy_on_write[0, 0] == 1e6
    drop_resident_pages(np.load(tmp_path / "values.npy", mmap_mode="r"))
    assert np.array_equal(np.load(tmp_path / "values.npy", mmap_mode="r"), values)


def standardise_whole(sections: list[np.ndarray], _: Path) -> None:
    from spahgc_kedro.graph import standardisation

    standardisation(sections, block=1024)


def read_reference_rows(sections: list[np.ndarray], _: Path) -> None:
    from spahgc_kedro.graph import ReferenceRows

    for held in sections:
        targets = np.zeros((held.shape[0], 2), dtype=np.float32)
        rows = np.random.default_rng(1).permutation(held.shape[0])
        ReferenceRows(held, targets, lambda raw: raw * 2.0)[rows]


def search_between_sections(sections: list[np.ndarray], _: Path) -> None:
    from spahgc_kedro.graph import pair_neighbours

    pair_neighbours(dict(zip("AB", sections, strict=True)), [("A", "B")], 3, "l1", 64)


def retrieve_for_a_fold(sections: list[np.ndarray], _: Path) -> None:
    from spahgc_kedro.graph import FoldReferences

    raw = dict(zip("AB", sections, strict=True))
    scaling = {"genes": ["g"], "transform": "log10", "min": [0.0], "max": [1.0]}
    references = FoldReferences(
        "fold",
        ["A", "B"],
        raw,
        np.zeros(sections[0].shape[1], dtype=np.float32),
        np.ones(sections[0].shape[1], dtype=np.float32),
        scaling,
        lambda section, genes, transform: np.zeros((raw[section].shape[0], 1), dtype=np.float32),
        {"k_refer": 3, "metric": "l1", "block_size": 64},
    )
    references.retrieve("A", raw["A"])


def write_to_the_store(sections: list[np.ndarray], folder: Path) -> None:
    from spahgc_kedro.datasets.graph_store import _write_section

    for index, held in enumerate(sections):
        n = held.shape[0]
        parts = {
            "embedding": held,
            "expression": np.zeros((n, 2), dtype=np.float32),
            "positions": np.zeros((n, 2)),
            "near_edges": np.zeros((2, 0), dtype=np.int64),
            "spot_ids": [str(i) for i in range(n)],
        }
        _write_section(folder / f"section{index}", parts)


@on_linux
@pytest.mark.parametrize(
    "scan, width",
    [
        (standardise_whole, 256),
        (read_reference_rows, 256),
        # wide rows: the L1 search costs rows^2 x width, so few rows cover the pages quickly
        (search_between_sections, 32_768),
        (retrieve_for_a_fold, 32_768),
        (write_to_the_store, 256),
    ],
    ids=["standardisation", "reference rows", "cross-section search", "a fold's retrieval", "store write"],
)
def test_the_graph_stages_scans_leave_no_spilled_section_resident(scan, width, tmp_path):
    # two sections, each its own mapping: a scan that lets go of one only leaves the other (half) resident
    mib = 32
    scan([spilled_rows(1, width, seed=seed)[1] for seed in (2, 3)], tmp_path / "warm-up")  # libraries map files too
    values, sections = zip(*(spilled_rows(mib // 2, width, seed=seed) for seed in (0, 1)), strict=True)
    before = resident_file_mib()
    scan(list(sections), tmp_path)
    assert resident_file_mib() - before < 0.25 * mib
    if scan is write_to_the_store:
        assert all(np.array_equal(np.load(tmp_path / f"section{i}" / "embedding.npy"), values[i]) for i in (0, 1))

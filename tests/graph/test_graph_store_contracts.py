"""Contracts of the stored section graph that the round-trip tests do not pin: a skeleton holds no features, and
the fingerprint of a stored section's features changes with everything they are made of."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from spahgc_kedro.datasets import SectionGraphStore
from spahgc_kedro.graph_store import _digest_array
from spahgc_kedro.spill import spilled
from tests.helpers.tiny_sections import tiny_graphs


@pytest.fixture
def kept(tmp_path, tiny, graph_params):
    """A test section of the first fold, left in the store."""
    folds, _, graphs = tiny_graphs(tiny, graph_params)
    store = SectionGraphStore(path=str(tmp_path / "section_graphs"))
    store.save(graphs)
    fold = sorted(folds["folds"])[0]
    return store.load().stored(f"{fold}/{folds['folds'][fold]['test'][0]}")


def digest_of(feed, *args) -> str:
    digest = hashlib.sha256()
    feed(digest, *args)
    return digest.hexdigest()


def test_a_skeleton_holds_zero_width_float32_features(kept):
    skeleton = kept.skeleton()
    assert tuple(skeleton["target"].x.shape) == (kept.num_spots, 0)
    assert tuple(skeleton["reference"].x.shape) == (skeleton["reference"].num_nodes, 0)
    assert skeleton["reference"].num_nodes > 0
    assert {str(skeleton[kind].x.dtype) for kind in ("target", "reference")} == {"torch.float32"}


@pytest.mark.parametrize(
    "change",
    [
        lambda fold: fold.update(genes=fold["genes"][::-1]),
        lambda fold: fold.update(transform="log1p" if fold["transform"] != "log1p" else "raw"),
        lambda fold: fold.update(mean=np.asarray(fold["mean"]) + 1.0),
        lambda fold: fold.update(max=np.asarray(fold["max"]) * 2.0),
    ],
    ids=["genes", "transform", "mean", "max"],
)
def test_the_feature_fingerprint_follows_the_folds_panel_transform_and_scaling(kept, change):
    original = kept.graphs.fold
    before = digest_of(kept.feature_sources_digest)
    assert digest_of(kept.feature_sources_digest) == before

    def changed(name):
        fold = dict(original(name))
        change(fold)
        return fold

    kept.graphs.fold = changed
    assert digest_of(kept.feature_sources_digest) != before


def test_an_array_digest_is_its_dtype_shape_and_values_however_it_is_held(tmp_path):
    values = np.arange(60, dtype=np.float32).reshape(12, 5)
    path = tmp_path / "values.npy"
    np.save(path, values)
    mapped = np.load(path, mmap_mode="r")
    expected = hashlib.sha256(b"float32(12, 5)" + values.tobytes()).hexdigest()
    assert digest_of(_digest_array, values) == expected
    assert digest_of(_digest_array, mapped) == expected
    assert digest_of(_digest_array, mapped, 7) == expected  # read in blocks of 7 bytes
    assert digest_of(_digest_array, values, 7) == expected  # an array in memory, fed in blocks too
    assert digest_of(_digest_array, spilled(values), 7) == expected
    # views of the mapped file: leading rows (contiguous, ending before the file does) and a column (strided)
    assert digest_of(_digest_array, mapped[:4]) == digest_of(_digest_array, values[:4].copy())
    assert digest_of(_digest_array, mapped[:, 1]) == digest_of(_digest_array, values[:, 1].copy())
    assert digest_of(_digest_array, mapped) != digest_of(_digest_array, values.astype(np.float64))


def test_a_truncated_array_file_names_itself_and_the_fix(tmp_path):
    path = tmp_path / "embedding.npy"
    np.save(path, np.ones((100, 4), dtype=np.float32))
    mapped = np.load(path, mmap_mode="r")
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size - 40)
    with pytest.raises(OSError, match=r"embedding\.npy' is shorter than its header says: re-run the graph pipeline"):
        _digest_array(hashlib.sha256(), mapped)

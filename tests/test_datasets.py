"""The project's file datasets: writes are atomic, a damaged file is named, never half-read."""

from __future__ import annotations

import numpy as np
import pytest

from spahgc_kedro.datasets import AnnDataDataset, TorchObjectDataset
from spahgc_kedro.errors import InputDataError


def test_an_interrupted_write_leaves_no_file_and_no_leftover(tmp_path, monkeypatch):
    dataset = TorchObjectDataset(filepath=str(tmp_path / "models" / "m.pt"))

    def crash(data, path):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "_write", crash)
    with pytest.raises(KeyboardInterrupt):
        dataset.save({"w": 1})
    assert list((tmp_path / "models").iterdir()) == []


def test_a_previous_file_stays_whole_until_the_new_one_is_complete(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    dataset = TorchObjectDataset(filepath=str(path))
    dataset.save({"w": 1})
    monkeypatch.setattr(dataset, "_write", lambda data, target: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(Exception, match="disk full"):
        dataset.save({"w": 2})
    assert TorchObjectDataset(filepath=str(path)).load() == {"w": 1}


def test_a_damaged_file_is_named_with_what_to_do(tmp_path):
    import anndata as ad

    path = tmp_path / "S1.h5ad"
    ad.AnnData(X=np.ones((3, 2), dtype=np.float32)).write_h5ad(path)
    path.write_bytes(path.read_bytes()[:200])  # truncated, as by a killed run of an older version
    with pytest.raises(Exception, match="S1.h5ad") as raised:
        AnnDataDataset(filepath=str(path)).load()
    error = raised.value
    while error is not None and not isinstance(error, InputDataError):
        error = error.__cause__
    assert error is not None and "delete it and re-run" in str(error)

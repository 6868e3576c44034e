"""The embedding pipeline end to end: tiny generated section, cache reuse, real HER2+ sections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.partitions import PartitionedDataset
from PIL import Image

from spahgc_kedro import encoders
from spahgc_kedro.datasets import CacheFolderDataset
from spahgc_kedro.pipelines.embedding import create_pipeline
from tests.helpers.images import image_section, tissue_like_image
from tests.helpers.partitions import as_partitions

HER2ST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "her2st"
EMBEDDING = {
    "encoder": "efficientnet_lite0",
    "device": "cpu",
    "seed": 0,
    "patch_size_px": 64,
    "patch_size_um": None,
    "pad_value": 255,
    "batch_size": 8,
    "num_workers": 0,
    "weights_path": None,
    "allow_download": False,
}


def _catalog(sections: dict, folder: Path, embedding: dict) -> DataCatalog:
    partitions = {"path": str(folder), "dataset": "spahgc_kedro.datasets.AnnDataDataset", "filename_suffix": ".h5ad"}
    return DataCatalog(
        datasets={
            "sections": MemoryDataset(sections, copy_mode="assign"),
            "embedding_cache": CacheFolderDataset(**partitions),
            "patch_embeddings": PartitionedDataset(**partitions),
            "params:embedding": MemoryDataset(embedding),
        }
    )


def _run(sections: dict, folder: Path, embedding: dict = EMBEDDING) -> dict:
    SequentialRunner().run(create_pipeline(), _catalog(sections, folder, embedding))
    return {
        key: load()
        for key, load in PartitionedDataset(
            path=str(folder), dataset="spahgc_kedro.datasets.AnnDataDataset", filename_suffix=".h5ad"
        )
        .load()
        .items()
    }


@pytest.fixture
def small_section(tmp_path):
    image = tmp_path / "tiny.png"
    Image.fromarray(tissue_like_image(200, 160)).save(image)
    # the last spot sits on the corner: its patch is three quarters padding
    centres = np.array([[100.0, 80.0], [40.0, 40.0], [160.0, 120.0], [0.0, 0.0]])
    return image_section(image, centres)


def test_pipeline_embeds_a_tiny_section_in_spot_order(tmp_path, small_section):
    import torch

    torch.set_num_threads(1)
    out = _run({"S1": small_section}, tmp_path / "features")["S1"]
    assert out.shape == (4, 1280) and out.X.dtype == np.float32
    assert list(out.obs_names) == list(small_section.obs_names)
    settings = out.uns["encoder"]
    assert settings["name"] == "efficientnet_lite0" and settings["patch_px"] == 64 and settings["dim"] == 1280
    assert len(settings["content_key"]) == 64
    assert len({tuple(row) for row in np.round(out.X, 4)}) == 4


def test_cache_hit_skips_the_encoder_and_a_changed_setting_misses(tmp_path, small_section, monkeypatch):
    import torch

    torch.set_num_threads(1)
    folder = tmp_path / "features"
    first = _run({"S1": small_section}, folder)["S1"]

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was built although the cache is valid")

    monkeypatch.setattr(encoders, "build_encoder", no_encoder)
    again = _run({"S1": small_section}, folder)["S1"]
    np.testing.assert_array_equal(again.X, first.X)
    assert again.uns["encoder"]["content_key"] == first.uns["encoder"]["content_key"]

    with pytest.raises(Exception, match="the encoder was built"):
        _run({"S1": small_section}, folder, {**EMBEDDING, "patch_size_px": 96})


def test_a_damaged_or_foreign_cache_entry_is_embedded_again(tmp_path, small_section, caplog):
    import shutil

    import torch

    torch.set_num_threads(1)
    other = small_section.copy()
    other.uns["section_id"] = "S2"
    other.obsm["spatial"] = other.obsm["spatial"][::-1].copy()  # other spots: other embeddings
    sections = {"S1": small_section, "S2": other}
    folder = tmp_path / "features"
    first = _run(sections, folder)
    # S1's embeddings copied over S2's (spot ids like 6x2 repeat across sections), then S1's truncated
    shutil.copy(folder / "S1.h5ad", folder / "S2.h5ad")
    (folder / "S1.h5ad").write_bytes((folder / "S1.h5ad").read_bytes()[:100])
    again = _run(sections, folder)
    for section_id in ("S1", "S2"):
        np.testing.assert_allclose(again[section_id].X, first[section_id].X, rtol=1e-6)
        assert again[section_id].uns["section_id"] == section_id
    assert not np.allclose(again["S1"].X, again["S2"].X)
    assert "cannot be read" in caplog.text and "for other inputs" in caplog.text


def test_a_run_killed_mid_stage_resumes_from_the_sections_it_finished(tmp_path, small_section, monkeypatch):
    """Each section reaches the cache folder as soon as it is embedded: a kill while embedding S3 keeps
    every section finished before it, and the rerun embeds only the rest, each section once in all."""
    from spahgc_kedro.pipelines.embedding import nodes
    from tests.helpers.fake_encoder import patch_statistics_encoder

    sections = {}
    for index, section_id in enumerate(["S1", "S2", "S3"]):
        section = small_section.copy()
        section.uns["section_id"] = section_id
        section.obsm["spatial"] = np.roll(small_section.obsm["spatial"], index, axis=0)
        sections[section_id] = section
    monkeypatch.setattr(encoders, "build_encoder", lambda name, **kwargs: patch_statistics_encoder(name, 64))
    embedded, killed = [], []
    real_embed = nodes.embed_section

    def embed_until_s3(section, *args, **kwargs):
        if section.uns["section_id"] == "S3" and not killed:
            killed.append(True)
            raise KeyboardInterrupt("killed while embedding S3")
        embedded.append(section.uns["section_id"])
        return real_embed(section, *args, **kwargs)

    monkeypatch.setattr(nodes, "embed_section", embed_until_s3)
    folder = tmp_path / "features"
    with pytest.raises(KeyboardInterrupt):
        _run(sections, folder)
    finished = list(embedded)
    assert finished and "S3" not in finished
    assert sorted(p.stem for p in folder.glob("*.h5ad")) == sorted(finished)
    out = _run(sections, folder)
    rerun = embedded[len(finished) :]
    assert sorted(rerun) == sorted(set(sections) - set(finished)), "the rerun re-embedded finished sections"
    assert sorted(out) == ["S1", "S2", "S3"] and all(out[s].uns["section_id"] == s for s in out)


def test_pipeline_is_discovered_by_the_registry():
    from kedro.framework.project import configure_project, find_pipelines

    configure_project("spahgc_kedro")
    pipelines = find_pipelines()
    assert "embedding" in pipelines
    assert pipelines["embedding"].outputs() == {"patch_embeddings"}


@pytest.mark.shared_data
@pytest.mark.skipif(not HER2ST.is_dir(), reason=f"real her2st sections not found at {HER2ST}")
def test_real_her2st_section_gives_one_row_per_spot(tmp_path):
    import torch

    from spahgc_kedro.readers import st_legacy

    torch.set_num_threads(1)
    section = st_legacy.read_section(HER2ST, "C2")
    out = _run({"C2": lambda: section}, tmp_path / "features", {**EMBEDDING, "patch_size_px": 224})["C2"]
    assert out.shape == (section.n_obs, 1280)
    assert list(out.obs_names) == list(section.obs_names)
    assert np.isfinite(out.X).all() and out.X.std(axis=0).mean() > 0.01


def test_section_groups_split_sections_and_merge_in_order(tmp_path, small_section):
    from spahgc_kedro.pipelines.embedding.nodes import embed_section_group, merge_section_embeddings

    sections = {"S2": small_section, "S1": small_section, "S3": small_section}
    groups = [embed_section_group(as_partitions(sections), {}, EMBEDDING, g, 2) for g in range(2)]
    assert [list(g) for g in groups] == [["S1", "S3"], ["S2"]]
    merged = merge_section_embeddings(*groups)
    assert list(merged) == ["S1", "S2", "S3"]
    np.testing.assert_array_equal(merged["S1"].X, merged["S2"].X)
    with pytest.raises(ValueError, match="two work groups"):
        merge_section_embeddings(groups[0], groups[0])


def test_pipeline_has_one_embedding_node_per_section_group():
    names = [n.name for n in create_pipeline(section_groups=3).nodes]
    assert names.count("merge_section_embeddings") == 1
    assert sorted(n for n in names if n.startswith("embed_section_group_")) == [
        f"embed_section_group_{g}" for g in range(3)
    ]

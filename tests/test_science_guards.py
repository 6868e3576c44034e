"""Tests that fail when the science is wrong: each pins a fact a small wrong change would break,
against an independent computation (scipy, numpy, a hand-made answer).

Guards against: targets left unscaled; the model's PCC taking |r|; HEG/HVG ranked on the
prediction; baselines, references, target statistics or folds seeing the test section; the
PCC term dropped from the loss; embedding rows out of spot order; x/y swapped in a reader.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from tests.helpers.partitions import as_partitions
from tests.helpers.retrieval import built_graphs
from tests.helpers.synthetic_folds import make_run


def test_metric_pcc_equals_scipy_on_random_data():
    from spahgc_kedro.metrics import pearson_per_gene, section_metrics

    rng = np.random.default_rng(0)
    measured = rng.normal(size=(40, 12))
    predicted = 0.3 * measured + rng.normal(size=(40, 12))
    predicted[:, 0] = -measured[:, 0]  # a perfectly anti-correlated gene must count as -1
    expected = [pearsonr(measured[:, g], predicted[:, g]).statistic for g in range(12)]
    np.testing.assert_allclose(pearson_per_gene(measured, predicted), expected, atol=1e-12)
    assert section_metrics(measured, predicted)["pcc_acg"] == pytest.approx(np.mean(expected))


def test_model_pcc_is_signed_and_equals_numpy():
    from spahgc_kedro.model.training import _mean_pcc, pcc_per_gene

    rng = np.random.default_rng(1)
    target = rng.normal(size=(30, 5))
    pred = -target + 0.5 * rng.normal(size=(30, 5))
    expected = [np.corrcoef(target[:, g], pred[:, g])[0, 1] for g in range(5)]
    got = pcc_per_gene(torch.tensor(pred), torch.tensor(target)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    assert (got < -0.5).all()  # anti-correlated: a |r| would make the loss reward this
    assert _mean_pcc(torch.tensor(pred), torch.tensor(target)).item() == pytest.approx(np.mean(expected))


def test_the_loss_is_mse_plus_weighted_pcc_and_contrastive_terms():
    from spahgc_kedro.model import ModelConfig, SpaHGC, TrainConfig
    from spahgc_kedro.model.training import _train_step, set_seed
    from tests.helpers.random_graphs import make_graph

    graph = make_graph(seed=3)
    config = TrainConfig(use_contrastive=False, w_pcc=0.7, model=ModelConfig(hidden=16, heads=2, n_layers=1))
    set_seed(0)
    model = SpaHGC.from_config(graph["target"].x.shape[1], graph["target"].y.shape[1], config.model).eval()
    terms = _train_step(model, graph, config, None, None, torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = model(graph.x_dict, graph.edge_index_dict).numpy()
    y = graph["target"].y.numpy()
    mse = ((pred - y) ** 2).mean()
    pcc = np.mean([np.corrcoef(pred[:, g], y[:, g])[0, 1] for g in range(y.shape[1])])
    assert terms["mse"].item() == pytest.approx(mse, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(mse + 0.7 * (1 - pcc), rel=1e-5)


def test_heg_and_hvg_are_ranked_on_the_measured_values():
    from spahgc_kedro.metrics import section_metrics

    rng = np.random.default_rng(2)
    measured = rng.normal(size=(50, 6)) + np.array([0, 0, 0, 10, 10, 10])  # genes 3-5 most expressed
    predicted = measured.copy()
    predicted[:, 3:] = rng.normal(size=(50, 3))  # ...and predicted badly
    predicted[:, :3] += 100  # the prediction would rank genes 0-2 first
    metrics = section_metrics(measured, predicted, n_top=3)
    assert metrics["pcc_heg50"] < 0.5  # the 3 genes measured highest, not the 3 predicted highest
    measured[:, :3] *= 20  # now genes 0-2 vary most in the measured values
    assert section_metrics(measured, predicted * 1.0, n_top=3)["pcc_hvg50"] == pytest.approx(1.0)


def test_graph_labels_are_the_independently_scaled_log_counts(tiny, graph_params):
    sections, _, _ = tiny
    _, scaling, graphs = built_graphs(tiny, graph_params, fold="S5")
    genes, low, high = scaling["S5"]["genes"], np.array(scaling["S5"]["min"]), np.array(scaling["S5"]["max"])
    fitting = ["S1", "S2", "S3", "S4"]  # train + validation of fold S5
    # the statistics are the fitting sections' min and max of log10(count + 1), by numpy here
    stacked = np.vstack([np.log10(sections[s][:, genes].X.toarray() + 1) for s in fitting])
    np.testing.assert_allclose(low, stacked.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(high, stacked.max(axis=0), rtol=1e-6)
    for section_id in ("S5", "S2"):
        counts = sections[section_id][:, genes].X.toarray()
        expected = (np.log10(counts + 1) - low) / np.where(high > low, high - low, 1)
        np.testing.assert_allclose(graphs[f"S5/{section_id}"]["target"].y.numpy(), expected, atol=1e-5)
    training_y = graphs["S5/S2"]["target"].y.numpy()
    assert training_y.min() >= -1e-6 and training_y.max() <= 1 + 1e-6


def test_no_test_section_in_folds_statistics_references_or_baselines(tiny, graph_params, monkeypatch):
    from spahgc_kedro import baselines
    from spahgc_kedro.pipelines.evaluation.nodes import predict_baselines
    from spahgc_kedro.predictions import gather_predictions

    sections, embeddings, _ = tiny
    folds, _, graphs = built_graphs(tiny, graph_params)
    for name, fold in folds["folds"].items():
        (test,) = fold["test"]
        assert test not in fold["train"] + fold["validation"]
        for key, graph in graphs.items():
            if key.startswith(f"{name}/"):
                assert test not in graph.reference_sections, key
    # every row a baseline is fitted on comes from the fold's train + validation sections
    run = make_run()
    fitted = []
    real = baselines.predict_baseline
    monkeypatch.setattr(
        "spahgc_kedro.pipelines.evaluation.nodes.predict_baseline",
        lambda name, train_x, *args: fitted.append(train_x) or real(name, train_x, *args),
    )
    gathered = gather_predictions(run["predictions"], run["folds"])
    predict_baselines(run["section_graphs"], run["folds"], gathered, {"seed": 0, "baselines": {"knn_l1": {"k": 1}}})
    for (key, prediction), train_x in zip(sorted(gathered.items()), fitted, strict=True):
        fold = run["folds"]["folds"][prediction.fold]
        allowed = np.vstack([run["sections"][s]["x"] for s in fold["train"] + fold["validation"]])
        test_rows = run["sections"][prediction.section_id]["x"]
        assert train_x.shape == allowed.shape, key
        np.testing.assert_allclose(np.sort(train_x, axis=0), np.sort(allowed, axis=0), atol=1e-5)
        assert not any(np.isclose(train_x, row, atol=1e-6).all(axis=1).any() for row in test_rows), key


def test_each_embedding_row_is_the_patch_at_its_spot(tmp_path, monkeypatch):
    """A synthetic image whose colour encodes position: the embedding (mean colour) says where each row's patch was."""
    from PIL import Image

    from spahgc_kedro import encoders
    from spahgc_kedro.pipelines.embedding.nodes import embed_section_group
    from tests.helpers.fake_encoder import patch_statistics_encoder
    from tests.helpers.images import image_section

    width, height = 400, 300
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([xs * 255 // width, ys * 255 // height, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    path = tmp_path / "gradient.png"
    Image.fromarray(pixels).save(path)
    rng = np.random.default_rng(4)
    centres = np.column_stack([rng.uniform(40, width - 40, 30), rng.uniform(40, height - 40, 30)])
    monkeypatch.setattr(encoders, "build_encoder", lambda name, **kw: patch_statistics_encoder(name, 16))
    params = {"encoder": "efficientnet_lite0", "device": "cpu", "seed": 0, "patch_size_px": 16, "pad_value": 255}
    params |= {"batch_size": 7, "num_workers": 0}
    embedded = embed_section_group(as_partitions({"S": image_section(path, centres)}), {}, params)["S"]
    # PatchStatistics' first channels are the mean red and green of the patch, in [0, 1]
    x_from_red = embedded.X[:, 0] * 255 / 255 * width
    y_from_green = embedded.X[:, 1] * 255 / 255 * height
    np.testing.assert_allclose(x_from_red, centres[:, 0], atol=3)
    np.testing.assert_allclose(y_from_green, centres[:, 1], atol=3)


def test_real_her2st_spots_are_where_the_image_and_array_grid_say(her2st_dir):
    """On real C2: pixel x follows the array column x and pixel y the array row y, and spots sit on stained tissue."""
    from spahgc_kedro.images import read_thumbnail
    from spahgc_kedro.readers import st_legacy

    section = st_legacy.read_section(her2st_dir, "C2")
    xy = section.obsm["spatial"]
    array_x = np.array([float(s.split("x")[0]) for s in section.obs_names])
    array_y = np.array([float(s.split("x")[1]) for s in section.obs_names])
    assert pearsonr(array_x, xy[:, 0]).statistic > 0.99 and pearsonr(array_y, xy[:, 1]).statistic > 0.99
    # a swap would put x along the rows: its correlation with the array column would collapse
    assert abs(pearsonr(array_x, xy[:, 1]).statistic) < 0.5
    thumbnail, (width, height) = read_thumbnail(section.uns["image_path"], 1024)
    scale = thumbnail.shape[1] / width
    rows = np.clip((xy[:, 1] * scale).astype(int), 0, thumbnail.shape[0] - 1)
    cols = np.clip((xy[:, 0] * scale).astype(int), 0, thumbnail.shape[1] - 1)
    brightness = thumbnail[rows, cols].mean(axis=1)
    background = np.median(thumbnail[:20, :20].reshape(-1, 3).mean(axis=1))
    # spots are on tissue: darker (stained) than the glass at the corner, nearly all of them
    assert np.mean(brightness < background - 10) > 0.9

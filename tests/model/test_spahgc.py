"""SpaHGC network, masked contrastive learning, training loop and prediction on tiny random graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from spahgc_kedro.model import (
    ModelConfig,
    SpaHGC,
    Teacher,
    TrainConfig,
    complementary_masks,
    contrastive_loss,
    fit,
    load_model,
    pcc_per_gene,
    predict,
)
from spahgc_kedro.model.contrastive import Predictor
from tests.helpers.random_graphs import HIDDEN, D, G, make_graph

SMALL = dict(hidden=HIDDEN, n_layers=2, heads=2)


MODEL_FIELDS = set(ModelConfig.__dataclass_fields__)


def small_config(**overrides) -> TrainConfig:
    """A tiny model: architecture overrides go to the ModelConfig, the rest to the TrainConfig."""
    model = {**SMALL, **{k: v for k, v in overrides.items() if k in MODEL_FIELDS}}
    rest = {k: v for k, v in overrides.items() if k not in MODEL_FIELDS}
    return TrainConfig(**{"epochs": 3, "lr": 1e-3, **rest, "model": ModelConfig(**model)})


def run(model: SpaHGC, graph: HeteroData, x_dict=None) -> torch.Tensor:
    """The model on a graph, PyG style (optionally on other node features)."""
    return model(x_dict or graph.x_dict, graph.edge_index_dict)


def test_forward_shapes():
    graph = make_graph()
    model = SpaHGC(D, G, **SMALL)
    h = model.encode(graph.x_dict, graph.edge_index_dict)
    assert h["target"].shape == (24, HIDDEN) and h["reference"].shape == (30, HIDDEN)
    assert run(model, graph).shape == (24, G)
    assert model.decode(h, graph.edge_index_dict).shape == (24, G)


def test_complementary_masks():
    keep1, keep2 = complementary_masks((200, 50), 0.1, torch.Generator().manual_seed(0))
    assert keep1.dtype == torch.bool
    assert torch.equal(keep1, ~keep2)
    assert abs((~keep1).float().mean().item() - 0.1) < 0.02
    x = torch.rand(200, 50) + 1.0
    view1, view2 = x * keep1, x * keep2
    assert torch.all((view1 == 0) == (view2 != 0))
    assert torch.equal(view1 + view2, x)


def test_contrastive_loss_values():
    a = torch.randn(10, 8)
    assert contrastive_loss(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert contrastive_loss(a, -a).item() == pytest.approx(4.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["ema", "frozen", "shared"])
def test_teacher_gets_no_gradient(mode):
    graph = make_graph()
    model = SpaHGC(D, G, **SMALL)
    teacher = Teacher(model, mode)
    online = model.encode(graph.x_dict, graph.edge_index_dict)
    target = teacher.encode(graph.x_dict, graph.edge_index_dict)
    assert not target["target"].requires_grad
    loss = contrastive_loss(online["target"], target["target"]) + model.decode(online, graph.edge_index_dict).sum()
    loss.backward()
    if mode != "shared":
        assert all(p.grad is None for p in teacher.model.parameters())
    assert any(p.grad is not None for p in model.parameters())


def _perturb(model: SpaHGC) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)


def test_ema_teacher_moves_toward_online_and_frozen_does_not():
    model = SpaHGC(D, G, **SMALL)
    ema, frozen, shared = Teacher(model, "ema", decay=0.9), Teacher(model, "frozen"), Teacher(model, "shared")
    before = {name: p.clone() for name, p in model.named_parameters()}
    _perturb(model)
    for teacher in (ema, frozen, shared):
        teacher.update()
    for name, p in model.named_parameters():
        old = before[name]
        ema_value = dict(ema.model.named_parameters())[name]
        torch.testing.assert_close(ema_value, 0.9 * old + 0.1 * p)
        assert torch.equal(dict(frozen.model.named_parameters())[name], old)
        assert dict(shared.model.named_parameters())[name] is p


def test_pcc_per_gene_excludes_constant_genes():
    pred = torch.tensor([[1.0, 2.0, 0.0], [2.0, 2.0, 1.0], [3.0, 2.0, 2.0]])
    target = torch.tensor([[1.0, 1.0, 5.0], [2.0, 2.0, 5.0], [3.0, 3.0, 5.0]])
    pcc = pcc_per_gene(pred, target)
    assert pcc[0].item() == pytest.approx(1.0)
    assert pcc[1:].isnan().all()
    pred.requires_grad_(True)
    pcc_per_gene(pred, target).nan_to_num(0.0).sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_training_reduces_loss_when_y_depends_on_x():
    history = fit([make_graph(seed=1)], [make_graph(seed=2)], small_config(epochs=25, lr=5e-3), progress=False).history
    first, last = history[0], history[-1]
    assert last["train_mse"] < 0.5 * first["train_mse"]
    assert last["train_loss"] < first["train_loss"]
    assert last["val_pcc"] > first["val_pcc"]


def test_fit_is_reproducible_and_keeps_best_epoch():
    train, validation = [make_graph(seed=1), make_graph(seed=3)], [make_graph(seed=2)]
    rows = []
    first = fit(
        train, validation, small_config(epochs=4), on_epoch=lambda e, row: rows.append((e, row)), progress=False
    )
    second = fit(train, validation, small_config(epochs=4), progress=False)
    assert first.history == second.history
    assert first.state_dict.keys() == second.state_dict.keys()
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    expected_keys = {
        "epoch",
        "train_loss",
        "train_mse",
        "train_pcc_loss",
        "train_gene_specific_loss",
        "train_contrastive_target",
        "train_contrastive_reference",
        "val_loss",
        "val_pcc",
    }
    assert set(first.history[0]) == expected_keys
    assert [e for e, _ in rows] == [1, 2, 3, 4] and rows[-1][1] == first.history[-1]
    pccs = [row["val_pcc"] for row in first.history]
    assert first.best_epoch == first.history[int(np.argmax(pccs))]["epoch"]
    # the kept weights are the best epoch's: they reproduce its validation PCC
    model = load_model(first.to_checkpoint())
    pred = torch.from_numpy(predict(model, validation[0]))
    assert pcc_per_gene(pred, validation[0]["target"].y).nanmean().item() == pytest.approx(max(pccs), abs=1e-5)
    different = fit(train, validation, small_config(epochs=4, seed=1), progress=False)
    assert different.history != first.history


def test_predict_is_deterministic_and_unmasked():
    graph = make_graph()
    model = SpaHGC(D, G, **SMALL)
    model.train()
    a, b = predict(model, graph), predict(model, graph)
    assert a.shape == (24, G) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(a, run(model, graph).numpy())
        masked = {"target": graph["target"].x * 0, "reference": graph["reference"].x}
        assert not np.allclose(a, run(model, graph, masked).numpy())


def test_zero_spatial_edges_and_missing_edge_type():
    empty = make_graph(spatial=False)
    missing = make_graph()
    del missing["target", "near", "target"]
    result = fit([empty, missing], [make_graph(seed=2, spatial=False)], small_config(epochs=2), progress=False)
    model = load_model(result.to_checkpoint())
    assert np.isfinite(predict(model, empty)).all()
    assert np.isfinite(predict(model, missing)).all()


@pytest.mark.parametrize(
    "flags",
    [
        dict(use_spatial_edges=False),
        dict(use_reference_edges=False),
        dict(use_contrastive=False),
        dict(teacher="frozen", use_predictor=False),
        dict(teacher="shared"),
    ],
)
def test_ablations_train_and_predict(flags):
    result = fit([make_graph(seed=1)], [make_graph(seed=2)], small_config(epochs=2, **flags), progress=False)
    model = load_model(result.to_checkpoint())
    assert np.isfinite(predict(model, make_graph(seed=4))).all()
    if flags.get("use_contrastive") is False:
        assert all(row["train_contrastive_target"] == 0.0 for row in result.history)
    if "use_spatial_edges" in flags:
        assert all(layer.spatial is None for layer in model.layers)
    if "use_reference_edges" in flags:
        assert all(layer.reference_neighbours is None for layer in model.layers)


def test_ablation_flags_change_the_computation():
    graph = make_graph()
    torch.manual_seed(0)
    full = SpaHGC(D, G, **SMALL).eval()
    no_spatial = SpaHGC(D, G, **SMALL, use_spatial_edges=False).eval()
    no_spatial.load_state_dict(full.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(run(full, graph), run(no_spatial, graph))


def test_predictor_shapes():
    predictor = Predictor(HIDDEN)
    out = predictor({"target": torch.randn(3, HIDDEN), "reference": torch.randn(5, HIDDEN)})
    assert out["target"].shape == (3, HIDDEN) and out["reference"].shape == (5, HIDDEN)


def test_fit_rejects_mismatched_graphs():
    bad = make_graph(seed=5)
    bad["reference"].x = bad["reference"].x[:, :-1]
    with pytest.raises(ValueError, match="s5"):
        fit([make_graph(seed=1)], [bad], small_config(epochs=1), progress=False)


def test_fit_without_validation_keeps_last_epoch():
    result = fit([make_graph(seed=1)], [], small_config(epochs=3), progress=False)
    assert result.best_epoch == 3
    assert all(np.isnan(row["val_pcc"]) for row in result.history)


def test_checkpoint_round_trips_through_torch_load_weights_only(tmp_path):
    result = fit([make_graph(seed=1)], [make_graph(seed=2)], small_config(epochs=2), progress=False)
    path = tmp_path / "model.pt"
    torch.save(result.to_checkpoint("run-1"), path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["mlflow_run_id"] == "run-1" and checkpoint["best_epoch"] == result.best_epoch
    assert checkpoint["model_config"] == {
        "target_dim": D,
        "n_genes": G,
        **SMALL,
        **{k: v for k, v in vars(ModelConfig()).items() if k not in SMALL},
    }
    graph = make_graph(seed=4)
    np.testing.assert_array_equal(
        predict(load_model(checkpoint), graph), predict(load_model(result.to_checkpoint()), graph)
    )


def test_train_config_reads_the_nested_parameters_and_names_stray_keys():
    config = TrainConfig.from_params({"epochs": 5, "model": {"hidden": 32}}, seed=3)
    assert config.epochs == 5 and config.seed == 3 and config.model.hidden == 32 and config.model.n_layers == 4
    with pytest.raises(ValueError, match=r"\['hidden'\].*train.model"):
        TrainConfig.from_params({"hidden": 32})


def test_gene_specific_loss_is_the_metrics_partial_correlation():
    from spahgc_kedro.metrics import gene_specific_pcc as metric
    from spahgc_kedro.model.training import gene_specific_pcc

    rng = np.random.default_rng(0)
    depth = rng.gamma(4.0, 1.0, 50)
    measured = np.outer(depth, rng.uniform(0.5, 2, 6)) + rng.normal(size=(50, 6))
    predicted = measured + rng.normal(size=(50, 6))
    value = gene_specific_pcc(torch.tensor(predicted), torch.tensor(measured)).item()
    assert value == pytest.approx(np.nanmean(metric(measured, predicted)), abs=1e-9)
    # a prediction that only follows the measured depth earns nothing
    depth_only = torch.tensor(np.outer(measured.mean(axis=1), rng.uniform(0.5, 2, 6)))
    assert gene_specific_pcc(depth_only, torch.tensor(measured)).abs().item() < 1e-6


def test_gene_specific_weight_enters_the_loss_with_its_weight():
    graph = make_graph(seed=1)
    without = fit([graph], [], small_config(epochs=1, use_contrastive=False), progress=False).history[0]
    weighted = fit([graph], [], small_config(epochs=1, use_contrastive=False, w_gene_specific=2.0), progress=False)
    row = weighted.history[0]
    assert without["train_gene_specific_loss"] == 0.0 and 0.0 < row["train_gene_specific_loss"] < 2.0
    # same seed, same first step: the total differs from the unweighted one by exactly the weighted term
    expected = without["train_loss"] + 2.0 * row["train_gene_specific_loss"]
    assert row["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_factorised_decoder_splits_depth_from_composition():
    graph = make_graph()
    model = SpaHGC(D, G, **SMALL, decoder="factorised").eval()
    h = model.encode(graph.x_dict, graph.edge_index_dict)
    with torch.no_grad():
        composition = model.out(
            model.pool(h["target"], h["reference"], graph["reference", "refer", "target"].edge_index)
        )
        model.gene_slope.fill_(0.0)
        # without the depth head's lines the prediction is the spot-centred composition plus the offsets
        centred = run(model, graph) - model.gene_offset
    torch.testing.assert_close(centred, composition - composition.mean(dim=1, keepdim=True))
    assert torch.allclose(centred.mean(dim=1), torch.zeros(24), atol=1e-6)
    with pytest.raises(ValueError, match="decoder"):
        SpaHGC(D, G, decoder="quadratic")


def test_patience_stops_after_that_many_epochs_without_a_better_validation_pcc():
    train, validation = [make_graph(seed=1)], [make_graph(seed=2)]
    full = fit(train, validation, small_config(epochs=30, lr=5e-2), progress=False)
    pccs = [row["val_pcc"] for row in full.history]
    stopped = fit(train, validation, small_config(epochs=30, lr=5e-2, patience=3), progress=False)
    # the same trajectory, cut 3 epochs after the best so far first stays unbeaten for 3 epochs
    expected_stop = next(e for e in range(1, 31) if e - (int(np.argmax(pccs[:e])) + 1) >= 3 or e == 30)
    assert len(stopped.history) == expected_stop < 30
    assert stopped.history == full.history[:expected_stop]
    assert stopped.best_epoch == int(np.argmax(pccs[:expected_stop])) + 1


def test_refit_trains_on_validation_too_for_the_chosen_number_of_epochs():
    train, validation = [make_graph(seed=1)], [make_graph(seed=2)]
    selected = fit(train, validation, small_config(epochs=6), progress=False)
    refit = fit(train, validation, small_config(epochs=6, refit_on_validation=True), progress=False)
    assert refit.history == selected.history and refit.best_epoch == selected.best_epoch
    # the weights are those of a run on both sections for best_epoch epochs, from the same seed
    both = fit(train + validation, [], small_config(epochs=selected.best_epoch), progress=False)
    assert all(torch.equal(refit.state_dict[k], both.state_dict[k]) for k in both.state_dict)
    assert not all(torch.equal(refit.state_dict[k], selected.state_dict[k]) for k in both.state_dict)


def test_fit_threads_setting_is_restored():
    before = torch.get_num_threads()
    fit([make_graph(seed=1)], [make_graph(seed=2)], small_config(epochs=1, threads=2), progress=False)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("chunk_spots", [1, 5, 7, 23])
def test_predicting_in_chunks_of_spots_gives_the_full_graph_numbers(chunk_spots):
    graph = make_graph()
    model = SpaHGC(D, G, **{**SMALL, "n_layers": 3})
    full = predict(model, graph)
    chunked = predict(model, graph, chunk_spots=chunk_spots)
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-6)
    # a chunk as large as the section is the ordinary full-graph pass
    np.testing.assert_array_equal(predict(model, graph, chunk_spots=graph["target"].num_nodes), full)


def test_chunks_hold_only_the_edges_into_their_spots():
    from spahgc_kedro.model.spahgc import REFERENCE_EDGES, REFERENCE_NEIGHBOUR_EDGES, SPATIAL_EDGES
    from spahgc_kedro.model.training import _edges_into

    near = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    refer = torch.tensor([[0, 1, 2, 0], [0, 1, 2, 3]])  # reference -> target
    close = torch.tensor([[0, 1, 2], [1, 2, 0]])
    targets, references = torch.tensor([True, True, False, False]), torch.tensor([False, False, True])
    kept = _edges_into(
        {SPATIAL_EDGES: near, REFERENCE_EDGES: refer, REFERENCE_NEIGHBOUR_EDGES: close}, targets, references
    )
    assert kept[SPATIAL_EDGES].tolist() == [[0, 1], [1, 0]]
    # into a chunk target, or out of a chunk reference (CNDA sends messages both ways)
    assert kept[REFERENCE_EDGES].tolist() == [[0, 1, 2], [0, 1, 2]]
    assert kept[REFERENCE_NEIGHBOUR_EDGES].tolist() == [[1], [2]]

"""The training loop's contracts on tiny random graphs: best epoch and refit, seeded streams, devices, logs, progress."""

from __future__ import annotations

import io
import logging
import math
import re
import sys

import pytest
import torch

from spahgc_kedro.model import fit, load_model, pcc_per_gene, predict, training
from spahgc_kedro.model.contrastive import Predictor, complementary_masks
from spahgc_kedro.model.spahgc import SpaHGC
from tests.helpers.random_graphs import make_graph, same_weights, tiny_config


def _anti_validation(seed: int = 2):
    """A validation section whose expression runs against what training learns: its PCC falls epoch after epoch."""
    graph = make_graph(seed=seed)
    graph["target"].y = -graph["target"].y
    return graph


def test_fit_without_training_graphs_says_what_it_needs():
    """No training graph: a ValueError that says fit needs one."""
    with pytest.raises(ValueError, match=r"^fit needs at least one training section graph$"):
        fit([], [make_graph(seed=2)], tiny_config(), progress=False)


def test_kept_weights_are_the_best_epochs_not_the_last():
    """The returned weights are a snapshot of the best epoch: they reproduce its validation PCC, not the last one's."""
    validation = _anti_validation()
    result = fit([make_graph(seed=1)], [validation], tiny_config(epochs=4), progress=False)
    pccs = [row["val_pcc"] for row in result.history]
    assert result.best_epoch == 1 and pccs[0] == max(pccs) and pccs[-1] < pccs[0] - 0.05
    pred = torch.from_numpy(predict(load_model(result.to_checkpoint()), validation))
    assert pcc_per_gene(pred, validation["target"].y).nanmean().item() == pytest.approx(pccs[0], abs=1e-5)


def test_refit_runs_for_the_best_epoch_count_not_the_configured_one():
    """With refit_on_validation the weights are a fresh run on training + validation for best_epoch epochs."""
    train, validation = [make_graph(seed=1)], [_anti_validation()]
    refit = fit(train, validation, tiny_config(epochs=4, refit_on_validation=True), progress=False)
    assert refit.best_epoch == 1 and len(refit.history) == 4
    both = fit(train + validation, [], tiny_config(epochs=1), progress=False)
    assert same_weights(refit.state_dict, both.state_dict)
    assert not same_weights(
        refit.state_dict, fit(train + validation, [], tiny_config(epochs=4), progress=False).state_dict
    )


def test_a_validation_pcc_tie_keeps_the_earlier_epoch():
    """With lr 0 every epoch validates the same: the first epoch stays the best."""
    config = tiny_config(epochs=3, lr=0.0, weight_decay=0.0, use_contrastive=False)
    result = fit([make_graph(seed=1)], [make_graph(seed=2)], config, progress=False)
    assert len({row["val_pcc"] for row in result.history}) == 1
    assert result.best_epoch == 1


def test_the_predictor_is_optimised_with_the_model(monkeypatch):
    """The BGRL predictor is trained too: its weights move during fit, as it must both be used and stepped."""
    made: list[tuple[Predictor, dict]] = []

    class Recorded(Predictor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append((self, {k: v.clone() for k, v in self.state_dict().items()}))

    monkeypatch.setattr(training, "Predictor", Recorded)
    fit([make_graph(seed=1)], [make_graph(seed=2)], tiny_config(), progress=False)
    [(predictor, initial)] = made
    assert all(not torch.equal(value, initial[key]) for key, value in predictor.state_dict().items())


def test_step_order_is_drawn_from_a_stream_seeded_by_the_seed_alone(monkeypatch):
    """Each epoch visits the sections in torch.randperm order of a generator seeded with config.seed only."""
    graphs = [make_graph(seed=s) for s in (1, 4, 5, 6, 7)]
    visited: list[str] = []
    step_graph = training._step_graph
    monkeypatch.setattr(
        training,
        "_step_graph",
        lambda graph, tile, device: visited.append(graph.section_id) or step_graph(graph, tile, device),
    )
    fit(graphs, [make_graph(seed=2)], tiny_config(seed=3, use_contrastive=False), progress=False)
    order = torch.Generator().manual_seed(3)
    expected = [graphs[i].section_id for _ in range(2) for i in torch.randperm(len(graphs), generator=order).tolist()]
    assert visited == expected


def test_feature_masks_come_from_their_own_stream_seeded_seed_plus_one(monkeypatch):
    """The first step's target and reference masks are those of a generator seeded config.seed + 1 (reproducible runs)."""
    drawn: list[torch.Tensor] = []

    def recorded(shape, p, generator):
        keep1, keep2 = complementary_masks(shape, p, generator)
        drawn.append(keep1)
        return keep1, keep2

    monkeypatch.setattr(training, "complementary_masks", recorded)
    graph = make_graph(seed=1)
    config = tiny_config(epochs=1, seed=5, mask_target=0.3, mask_reference=0.6)
    fit([graph], [make_graph(seed=2)], config, progress=False)
    stream = torch.Generator().manual_seed(6)
    expected_target = torch.rand(tuple(graph["target"].x.shape), generator=stream) >= 0.3
    expected_reference = torch.rand(tuple(graph["reference"].x.shape), generator=stream) >= 0.6
    assert torch.equal(drawn[0], expected_target) and torch.equal(drawn[1], expected_reference)


def test_a_validation_section_above_the_spot_limit_never_passes_whole_through_the_model(monkeypatch):
    """With max_full_graph_spots, a larger validation section is predicted in chunks, never in one full pass."""
    whole_passes: list[int] = []
    forward = SpaHGC.forward

    def recorded(self, x_dict, edge_index_dict):
        whole_passes.append(x_dict["target"].shape[0])
        return forward(self, x_dict, edge_index_dict)

    monkeypatch.setattr(SpaHGC, "forward", recorded)
    config = tiny_config(epochs=1, max_full_graph_spots=12)
    result = fit([make_graph(n=12, seed=1)], [make_graph(n=24, seed=2)], config, progress=False)
    assert whole_passes == [] and math.isfinite(result.history[0]["val_pcc"])
    # a section within the limit is one ordinary pass
    fit([make_graph(n=12, seed=1)], [make_graph(n=12, seed=2)], config, progress=False)
    assert whole_passes == [12]


def test_tiled_training_is_logged_and_whole_section_training_is_not(caplog):
    """Tiling is announced with the tile count and the limit; a run without tiles says nothing about tiles."""
    caplog.set_level(logging.INFO, logger=training.__name__)
    fit(
        [make_graph(n=24, seed=1)], [make_graph(seed=2)], tiny_config(epochs=1, max_full_graph_spots=12), progress=False
    )
    assert "Training on 2 spatial tiles of at most 12 spots." in caplog.messages
    caplog.clear()
    fit([make_graph(n=24, seed=1)], [make_graph(seed=2)], tiny_config(epochs=1), progress=False)
    fit(
        [make_graph(n=24, seed=1)], [make_graph(seed=2)], tiny_config(epochs=1, max_full_graph_spots=24), progress=False
    )
    assert not [message for message in caplog.messages if "tiles" in message]


def test_an_early_stop_is_logged_with_its_epoch_and_the_best_epoch(caplog):
    """Patience stops best_epoch + patience epochs in, and the log says when and since which epoch."""
    caplog.set_level(logging.INFO, logger=training.__name__)
    result = fit([make_graph(seed=1)], [_anti_validation()], tiny_config(epochs=10, patience=2), progress=False)
    assert result.best_epoch == 1 and len(result.history) == 3
    assert "Early stop at epoch 3: no better validation PCC since epoch 1." in caplog.messages


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there_fails_instead_of_training_on_the_cpu():
    """config.device is honoured: asking for CUDA without it raises rather than silently training on the CPU."""
    with pytest.raises((RuntimeError, AssertionError)):
        fit([make_graph(seed=1)], [make_graph(seed=2)], tiny_config(epochs=1, device="cuda"), progress=False)


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, so the progress bar draws into it."""

    def isatty(self) -> bool:
        return True


def _drawn(monkeypatch, *args, **kwargs) -> tuple[str, training.FitResult]:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    # tqdm would trim the line to a COLUMNS width; without it the bar's text is whole
    monkeypatch.delenv("COLUMNS", raising=False)
    result = fit(*args, **kwargs)
    return terminal.getvalue(), result


def test_progress_is_drawn_by_default_with_the_epochs_loss_pcc_and_best_epoch(monkeypatch):
    """On a terminal fit draws an 'epochs' bar by default whose postfix shows the last epoch's numbers."""
    text, result = _drawn(monkeypatch, [make_graph(seed=1)], [make_graph(seed=2)], tiny_config())
    last = result.history[-1]
    assert "\repochs: 100%" in text
    final = text.split("\r")[-1] if text.split("\r")[-1].strip() else text.split("\r")[-2]
    assert re.search(rf"\bbest={result.best_epoch}\b", final), final
    assert f"train_loss={last['train_loss']:.4f}" in final and f"val_pcc={last['val_pcc']:.4f}" in final, final


def test_no_progress_is_drawn_when_asked_for_none(monkeypatch):
    """progress=False draws nothing, even on a terminal."""
    text, _ = _drawn(monkeypatch, [make_graph(seed=1)], [make_graph(seed=2)], tiny_config(), progress=False)
    assert text == ""


def test_the_refit_run_draws_its_progress_too(monkeypatch):
    """With refit_on_validation the second run (no validation: val_pcc nan) also shows its epochs."""
    config = tiny_config(epochs=3, refit_on_validation=True)
    text, result = _drawn(monkeypatch, [make_graph(seed=1)], [_anti_validation()], config, progress=True)
    assert result.best_epoch == 1
    assert "\repochs: 100%" in text and "val_pcc=nan" in text and "| 1/1 [" in text

"""Masked contrastive learning's parts against hand computations: the loss, the masks, the teacher, the predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spahgc_kedro.model import SpaHGC, Teacher, complementary_masks, contrastive_loss
from spahgc_kedro.model.contrastive import Predictor
from tests.helpers.random_graphs import HIDDEN, D, G


def test_contrastive_loss_is_two_minus_twice_the_mean_row_cosine():
    rng = np.random.default_rng(0)
    online, teacher = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    cosines = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(online, teacher, strict=True)]
    loss = contrastive_loss(torch.tensor(online), torch.tensor(teacher))
    assert loss.item() == pytest.approx(2 - 2 * np.mean(cosines), rel=1e-12)


def test_masks_come_from_the_given_generator_only():
    first = complementary_masks((40, 7), 0.3, torch.Generator().manual_seed(5))
    torch.manual_seed(123)
    second = complementary_masks((40, 7), 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], complementary_masks((40, 7), 0.3, torch.Generator().manual_seed(6))[0])


def test_teacher_settings_are_checked_with_their_allowed_range():
    model = SpaHGC(D, G, hidden=HIDDEN, n_layers=1, heads=2)
    with pytest.raises(ValueError, match=r"^teacher mode 'mean' is not one of \('ema', 'frozen', 'shared'\)$"):
        Teacher(model, "mean")
    for decay in (-0.01, 1.01, 1.5):
        with pytest.raises(ValueError, match=rf"^ema decay must lie in \[0, 1\], got {decay}$"):
            Teacher(model, "ema", decay)
    for decay in (0.0, 0.5, 1.0):
        assert Teacher(model, "ema", decay).decay == decay
    # the method's teacher by default: an exponential moving average of the online model, decay 0.99
    assert (Teacher(model).mode, Teacher(model).decay) == ("ema", 0.99)


@pytest.mark.parametrize("mode", ["ema", "frozen"])
def test_a_copied_teacher_owns_its_weights_and_leaves_the_online_model_trainable(mode):
    model = SpaHGC(D, G, hidden=HIDDEN, n_layers=1, heads=2)
    teacher = Teacher(model, mode)
    assert teacher.mode == mode and teacher.online is model and teacher.model is not model
    online_weights = {id(p) for p in model.parameters()}
    assert all(id(p) not in online_weights for p in teacher.model.parameters())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_a_shared_teacher_is_the_online_model_itself():
    model = SpaHGC(D, G, hidden=HIDDEN, n_layers=1, heads=2)
    teacher = Teacher(model, "shared")
    assert teacher.model is model and all(p.requires_grad for p in model.parameters())


def test_predictor_is_linear_leaky_relu_linear_per_node_type():
    predictor = Predictor(HIDDEN)
    assert sorted(predictor.heads) == ["reference", "target"]
    for head in predictor.heads.values():
        first, activation, last = head
        assert (first.in_features, first.out_features, last.in_features, last.out_features) == (HIDDEN,) * 4
        assert isinstance(activation, torch.nn.LeakyReLU) and activation.negative_slope == 0.2
    h = torch.randn(4, HIDDEN)
    head = predictor.heads["target"]
    hand = torch.nn.functional.leaky_relu(h @ head[0].weight.T + head[0].bias, 0.2) @ head[2].weight.T + head[2].bias
    torch.testing.assert_close(predictor({"target": h, "reference": h})["target"], hand)

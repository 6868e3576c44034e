"""Contracts of folds and targets that the protocol tests leave open: an ensemble lists its head first whatever
the names, and unscaled predictions keep the float32 of the stored targets."""

from __future__ import annotations

import numpy as np

from spahgc_kedro.folds import ensemble_members
from spahgc_kedro.targets import minmax_scale, minmax_unscale


def test_an_ensemble_lists_its_head_first_even_when_a_member_sorts_before_it():
    folds = {
        "folds": {
            "patient_B": {"ensemble": "patient_B"},
            "alt_B_2": {"ensemble": "patient_B"},
            "alt_B_1": {"ensemble": "patient_B"},
            "plain": {},
        }
    }
    # the members follow in the plan's order
    assert ensemble_members(folds) == {"patient_B": ["patient_B", "alt_B_2", "alt_B_1"]}


def test_unscaled_values_are_float32_like_the_targets_they_stand_for():
    low, high = [0.0, 1.0], [2.0, 5.0]
    values = np.array([[0.5, 0.25], [1.0, 0.0]], dtype=np.float32)
    unscaled = minmax_unscale(values, low, high)
    assert unscaled.dtype == np.float32
    np.testing.assert_array_equal(unscaled, np.array([[1.0, 2.0], [2.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(minmax_scale(unscaled, low, high), values)

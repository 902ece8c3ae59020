"""Loss weightings of task=multi against hand-computed values (recforge.models.weighting)."""
from __future__ import annotations

import math

import pytest
import torch

from recforge.errors import RecforgeError
from recforge.models.weighting import (
    FixedWeights,
    UncertaintyWeights,
    uncertainty_weighted,
)


def test_uncertainty_weighting_value_and_gradients_by_hand():
    # L = exp(-s1) L1 + s1 + exp(-s2) L2 + s2 with L = (2, 0.5), s = (0, ln 2):
    #   = 1 * 2 + 0 + 0.5 * 0.5 + ln 2 = 2.25 + 0.693147...
    # dL/ds_i = 1 - exp(-s_i) L_i = (1 - 2, 1 - 0.25) = (-1, 0.75); dL/dL_i = exp(-s_i) = (1, 0.5)
    losses = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    log_vars = torch.tensor([0.0, math.log(2.0)], dtype=torch.float64, requires_grad=True)
    total = uncertainty_weighted(losses, log_vars)
    total.backward()
    assert float(total.detach()) == pytest.approx(2.25 + math.log(2.0), abs=1e-12)
    assert log_vars.grad.tolist() == pytest.approx([-1.0, 0.75], abs=1e-12)
    assert losses.grad.tolist() == pytest.approx([1.0, 0.5], abs=1e-12)


def test_uncertainty_weights_module_learns_log_of_each_loss():
    weighting = UncertaintyWeights(["next_item", "intent"])
    assert weighting.log_vars.tolist() == [0.0, 0.0] and weighting.weights() == {"next_item": 1.0, "intent": 1.0}
    losses = {"intent": torch.tensor(0.5), "next_item": torch.tensor(2.0)}  # order of the dict does not matter
    assert float(weighting(losses)) == pytest.approx(2.5)  # exp(0) * (2 + 0.5) + 0
    # minimising over s alone reaches s_i = log L_i (the stationary point of exp(-s) L + s), weights 1 / L_i
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.1)
    for _ in range(2000):
        optimizer.zero_grad()
        weighting(losses).backward()
        optimizer.step()
    assert weighting.log_vars.tolist() == pytest.approx([math.log(2.0), math.log(0.5)], abs=1e-4)
    assert weighting.weights() == pytest.approx({"next_item": 0.5, "intent": 2.0}, abs=1e-4)


def test_fixed_weights_sum_and_switch_off_a_task():
    weighting = FixedWeights({"next_item": 1.0, "intent": 0.5, "value": 0.0})
    assert [weighting.trains(t) for t in ("next_item", "intent", "value", "other")] == [True, True, False, False]
    # a switched-off task's loss is not needed (not computed in the training step)
    assert float(weighting({"next_item": torch.tensor(2.0), "intent": torch.tensor(3.0)})) == pytest.approx(3.5)
    assert weighting.weights() == {"next_item": 1.0, "intent": 0.5, "value": 0.0}
    assert list(weighting.parameters()) == []


@pytest.mark.parametrize("weights", [{"a": 0.0}, {"a": 1.0, "b": -0.5}])
def test_fixed_weights_reject_negative_or_all_zero(weights):
    with pytest.raises(RecforgeError, match="task.weights"):
        FixedWeights(weights)


def test_weighting_must_name_the_model_tasks():
    with pytest.raises(RecforgeError, match=r"\['intent', 'next_item'\]"):
        UncertaintyWeights(["next_item", "intent"]).check_tasks(["next_item", "intent", "value"])
    with pytest.raises(RecforgeError, match="once"):
        UncertaintyWeights(["a", "a"])

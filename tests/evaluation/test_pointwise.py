"""Intent and value metrics against hand-computed cases."""
import math

import pytest
import torch

from recforge.evaluation.pointwise import intent_metrics, value_metrics


def test_intent_metrics_hand_computed() -> None:
    probs, labels = torch.tensor([0.1, 0.4, 0.35, 0.8], dtype=torch.float64), torch.tensor([0, 0, 1, 1])
    m = intent_metrics(probs, labels)
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered correctly
    assert m["auc"] == pytest.approx(0.75)
    # predicted positive at > 0.5: only 0.8 -> TP 1, FP 0, FN 1, TN 2
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert m["logloss"] == pytest.approx(expected, rel=1e-9)


def test_intent_threshold_and_ties() -> None:
    m = intent_metrics(torch.tensor([0.5, 0.5]), torch.tensor([0, 1]))
    assert m["auc"] == pytest.approx(0.5)  # a tie counts half
    assert m["accuracy"] == pytest.approx(0.5)  # 0.5 is not > threshold: both predicted negative
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    m = intent_metrics(torch.tensor([0.3, 0.6]), torch.tensor([1, 1]), threshold=0.25)
    assert m["recall"] == pytest.approx(1.0) and m["f1"] == pytest.approx(1.0)


def test_logloss_is_finite_for_certain_wrong_predictions() -> None:
    m = intent_metrics(torch.tensor([0.0, 1.0]), torch.tensor([1, 0]))
    assert m["logloss"] == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_value_metrics_hand_computed() -> None:
    m = value_metrics(torch.tensor([3.0, 4.0, 5.0]), torch.tensor([4.0, 4.0, 3.0]))  # errors -1, 0, 2
    assert m["mse"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert m["mae"] == pytest.approx(1.0)

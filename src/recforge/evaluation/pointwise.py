"""Pure metrics for the intent (binary) and value (regression) tasks, on whole evaluation sets.

Intent: AUC, LogLoss, Accuracy, Precision, Recall, F1 from predicted probabilities and 0/1 labels (torchmetrics'
functional binary metrics; LogLoss is the mean binary cross-entropy with probabilities clamped to [eps, 1 - eps]).
Value: MSE, RMSE, MAE. Every function returns float64 Python numbers so logs and reports match exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    binary_precision,
    binary_recall,
)

INTENT_METRICS = ("auc", "logloss", "accuracy", "precision", "recall", "f1")
VALUE_METRICS = ("mse", "rmse", "mae")


def intent_metrics(probs: Tensor, labels: Tensor, threshold: float = 0.5, eps: float = 1e-7) -> dict[str, float]:
    """probs: (S,) in [0, 1]; labels: (S,) in {0, 1}. A prediction is positive when prob > threshold
    (torchmetrics' rule); precision of no positive prediction is 0."""
    probs, labels = probs.double().flatten(), labels.long().flatten()  # (S,), (S,)
    clamped = probs.clamp(eps, 1 - eps)
    return {
        "auc": float(binary_auroc(probs, labels)),
        "logloss": float(F.binary_cross_entropy(clamped, labels.double())),
        "accuracy": float(binary_accuracy(probs, labels, threshold=threshold)),
        "precision": float(binary_precision(probs, labels, threshold=threshold)),
        "recall": float(binary_recall(probs, labels, threshold=threshold)),
        "f1": float(binary_f1_score(probs, labels, threshold=threshold)),
    }


def value_metrics(preds: Tensor, targets: Tensor) -> dict[str, float]:
    """preds, targets: (S,) real values."""
    error = preds.double().flatten() - targets.double().flatten()  # (S,)
    mse = float(torch.mean(error**2))
    return {"mse": mse, "rmse": mse**0.5, "mae": float(torch.mean(error.abs()))}


class ValueMetrics:
    """The value task's outputs are ratings; ``clip`` (low, high) bounds them as Surprise does before scoring."""

    names = VALUE_METRICS
    lower_is_better = ("mse", "rmse", "mae")

    def __init__(self, clip: tuple[float, float] | None = None) -> None:
        self.clip = tuple(clip) if clip is not None else None

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs if self.clip is None else outputs.clamp(*self.clip)

    def initial_bias(self, train_mean: float) -> float:
        return train_mean

    def __call__(self, outputs: Tensor, labels: Tensor) -> dict[str, float]:
        return value_metrics(self.predictions(outputs), labels)


class IntentMetrics:
    """The intent task's outputs are logits of "yes"; probabilities are their sigmoid."""

    names = INTENT_METRICS
    lower_is_better = ("logloss",)

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def predictions(self, outputs: Tensor) -> Tensor:
        return torch.sigmoid(outputs)

    def initial_bias(self, train_mean: float) -> float:
        p = min(max(train_mean, 1e-6), 1 - 1e-6)
        return float(torch.logit(torch.tensor(p, dtype=torch.float64)))

    def __call__(self, outputs: Tensor, labels: Tensor) -> dict[str, float]:
        return intent_metrics(self.predictions(outputs), labels, threshold=self.threshold)

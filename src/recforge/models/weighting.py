"""How a multi-task model adds its per-task losses into one (``task.weighting``, recforge.models.multi_module).

``FixedWeights``: L = sum_i w_i L_i with weights from the config (``task.weights``); a weight of 0 switches a task's
training loss off (its head is still evaluated), which gives the single-task baselines under the same data.

``UncertaintyWeights``: homoscedastic-uncertainty weighting of Kendall, Gal and Cipolla, "Multi-Task Learning Using
Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018, in the form without the 1/2 factors that
their eq. 10 gives for classification and that most implementations use for every task:

    L = sum_i exp(-s_i) * L_i + s_i,        s_i = log sigma_i^2, learned, one per task (starting at 0).

dL/ds_i = L_i * (-exp(-s_i)) + 1, zero at s_i = log L_i: a task whose loss stays large gets a smaller weight, and the
+s_i term keeps the weights from all falling to 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from recforge.errors import RecforgeError


def uncertainty_weighted(losses: Tensor, log_vars: Tensor) -> Tensor:
    """sum_i exp(-s_i) * L_i + s_i; losses, log_vars: (T,) -> scalar."""
    return (torch.exp(-log_vars) * losses + log_vars).sum()


class LossWeighting(nn.Module):
    """Role: ``forward({task: loss}) -> total loss``; ``weights()`` the current weight of each task (logged);
    ``trains(task)`` whether the task's loss counts at all (a fixed weight of 0 does not)."""

    tasks: tuple[str, ...]

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:  # type: ignore[override]
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def trains(self, task: str) -> bool:
        return task in self.tasks

    def check_tasks(self, tasks: Sequence[str]) -> None:
        """Every task of the model has a weight and every weight a task (one sentence naming both otherwise)."""
        if set(tasks) != set(self.tasks):
            raise RecforgeError(f"task.weighting names the tasks {sorted(self.tasks)}, but the model has the tasks "
                                f"{sorted(tasks)}; give task.weights exactly one entry per task.")

    def _losses(self, losses: Mapping[str, Tensor], tasks: Sequence[str]) -> Tensor:
        return torch.stack([losses[name] for name in tasks])  # (T,)


class FixedWeights(LossWeighting):
    """L = sum_i w_i L_i; ``weights`` {task: w >= 0}, at least one above 0."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        bad = {name: w for name, w in weights.items() if not float(w) >= 0}
        if bad or not any(float(w) > 0 for w in weights.values()):
            raise RecforgeError(f"task.weights={dict(weights)}: every weight must be >= 0 and one above 0.")
        self.tasks = tuple(weights)
        self.register_buffer("w", torch.tensor([float(weights[name]) for name in self.tasks]), persistent=False)

    def trains(self, task: str) -> bool:
        return task in self.tasks and float(self.w[self.tasks.index(task)]) > 0

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:  # type: ignore[override]
        active = [name for name in self.tasks if self.trains(name)]
        w = torch.stack([self.w[self.tasks.index(name)] for name in active])  # (T',)
        return (w * self._losses(losses, active)).sum()

    def weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.tasks, self.w)}


class UncertaintyWeights(LossWeighting):
    """Kendall et al. (CVPR 2018): L = sum_i exp(-s_i) L_i + s_i, one learned s_i = log sigma_i^2 per task,
    starting at ``init`` (0: every weight starts at 1)."""

    def __init__(self, tasks: Sequence[str], init: float = 0.0) -> None:
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise RecforgeError(f"task.weighting.tasks={list(tasks)} must name each task once.")
        self.tasks = tuple(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init)))  # (T,) s_i

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:  # type: ignore[override]
        return uncertainty_weighted(self._losses(losses, self.tasks), self.log_vars)

    def weights(self) -> dict[str, float]:
        return {name: float(torch.exp(-s)) for name, s in zip(self.tasks, self.log_vars.detach())}

"""LightningModule for the intent and value tasks: history + user + target item -> one output per sample.

The sequence encoder reads the user's history (its last position is the user state), the head combines it with
the user and the target item, the loss compares the output with the label (MSE for values, BCE with logits for
intents), and the task's metrics object turns outputs into predictions and metrics (RMSE/MAE, AUC/F1, ...).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric

from recforge.errors import TrainingDiverged
from recforge.models.encoders.base import SequenceEncoder
from recforge.models.heads import PointwiseHead
from recforge.models.task_module import TaskModule


class TaskMetrics(Protocol):
    names: tuple[str, ...]
    def predictions(self, outputs: Tensor) -> Tensor: ...
    def initial_bias(self, train_mean: float) -> float: ...
    def __call__(self, outputs: Tensor, labels: Tensor) -> dict[str, float]: ...


class OutputAccumulator(Metric):
    """(sample index, output, label) triples; de-duplicated by index (DistributedSampler repeats samples)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("outputs", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, outputs: Tensor, labels: Tensor) -> None:  # type: ignore[override]
        self.index.append(index.long())
        self.outputs.append(outputs.detach().double())
        self.labels.append(labels.double())

    def compute(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        index, outputs, labels = (_cat(s) for s in (self.index, self.outputs, self.labels))
        order = torch.argsort(index, stable=True)
        index = index[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return outputs[order][first], labels[order][first]  # (S,), (S,)


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    return state if isinstance(state, Tensor) else (torch.cat(state) if state else torch.empty(0))


class PointwiseModule(TaskModule):
    """Intent or value prediction; ``decoder`` is a head (state, users, items) -> (B,)."""

    sample_kind = "ratings"  # what it reads; its datamodule declares the same (checked by recforge.run.validate)

    def __init__(self, encoder: SequenceEncoder, decoder: PointwiseHead, loss: nn.Module, metrics: TaskMetrics,
                 optimizer: Callable[..., Optimizer], scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__(optimizer, scheduler)
        self.encoder, self.decoder, self.loss, self.metrics = encoder, decoder, loss, metrics
        self.val_acc, self.test_acc = OutputAccumulator(), OutputAccumulator()
        self._loss_sum = torch.zeros(())

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if stage == "fit" and datamodule is not None:
            self.decoder.init_global_bias(self.metrics.initial_bias(datamodule.train_mean))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Raw outputs (rating or logit) for a batch. (B,)"""
        history = self.encoder.inference_input(batch["history"])  # (B, L)
        state = self.encoder.final_state(history)  # (B, H)
        return self.decoder(state, batch["user"], batch["item"])  # (B,)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self(batch).float(), batch["label"].float())
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["label"]))
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach()
        return loss

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros(())

    def on_train_epoch_end(self) -> None:
        total = float(self._loss_sum)  # one host sync per epoch
        if not torch.isfinite(torch.tensor(total)):
            raise TrainingDiverged(
                f"training loss became {total} in epoch {self.current_epoch}; lower optimizer.lr or check the data."
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.val_acc.update(batch["index"], self(batch).float(), batch["label"])

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.test_acc.update(batch["index"], self(batch).float(), batch["label"])

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_outputs("val", self.val_acc)
        if not self.trainer.sanity_checking:
            self.val_history.append((self.current_epoch, metrics))

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._log_outputs("test", self.test_acc)

    def _log_outputs(self, stage: str, acc: OutputAccumulator) -> dict[str, float]:
        outputs, labels = acc.compute()  # every process's samples, once each
        acc.reset()
        self.evaluated_samples[stage] = int(labels.numel())
        metrics = self.metrics(outputs, labels)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=True, reduce_fx="max")
        return metrics

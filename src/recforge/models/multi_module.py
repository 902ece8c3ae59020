"""LightningModule for ``task=multi``: one sequence encoder, one head per behaviour, trained together.

Heads: next item (the ``decoder`` over all items, ``loss`` at every position of a window, as NextItemModule),
and pointwise heads (``heads``: intent = a logit of rating >= threshold, value = the rating; user state + user +
target item -> one number, as PointwiseModule). The encoder and the item table are shared. Each training step
encodes one batch of windows once (recforge.data.multitask, which also explains why no held-out label reaches a
training input): the state at every position predicts the next item and, for the pointwise heads, the rating and
intent of that same next item (the encoder must read no later position: ``SequenceEncoder.next_item_states``).
``weighting`` (recforge.models.weighting: fixed weights or Kendall et al.'s uncertainty weighting) adds the
per-task losses. Validation and test score every head on its own samples and log
``stage/<task>/<metric>``: ``val/next_item/ndcg@10``, ``val/intent/auc``, ``val/value/rmse``; ``objective`` may
name any of them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from recforge.errors import TrainingDiverged
from recforge.evaluation.ranking import (
    RankAccumulator,
    ranks_and_top,
    repeated_targets,
)
from recforge.models.decoders import Decoder
from recforge.models.encoders.base import SequenceEncoder
from recforge.models.heads import PointwiseHead
from recforge.models.losses import NextItemLoss
from recforge.models.pointwise_module import OutputAccumulator, TaskMetrics
from recforge.models.task_module import TaskModule
from recforge.models.weighting import LossWeighting

NEXT_ITEM = "next_item"


class PointwiseTask(nn.Module):
    """One pointwise head of a multi-task model: ``head`` (state, users, items) -> (B,), its ``loss`` against the
    batch's ``label`` key (``rating`` or ``intent``) and its ``metrics``."""

    def __init__(self, head: PointwiseHead, loss: nn.Module, metrics: TaskMetrics, label: str) -> None:
        super().__init__()
        self.head, self.loss, self.metrics, self.label = head, loss, metrics, label
        self.val_acc, self.test_acc = OutputAccumulator(), OutputAccumulator()


class MultiTaskModule(TaskModule):
    """Next-item ranking and pointwise heads on one encoder; ``heads`` maps a task name to its PointwiseTask."""

    sample_kind = "multi"  # what it reads; its datamodule declares the same (checked by recforge.run.validate)

    def __init__(self, encoder: SequenceEncoder, decoder: Decoder, loss: NextItemLoss, heads: Mapping[str, PointwiseTask],
                 weighting: LossWeighting, optimizer: Callable[..., Optimizer],
                 scheduler: Callable[..., Any] | None = None, ks: tuple[int, ...] = (5, 10, 20),
                 mask_history: bool = True) -> None:
        super().__init__(optimizer, scheduler)
        self.encoder, self.decoder, self.loss = encoder, decoder, loss
        self.heads = nn.ModuleDict(dict(heads))
        weighting.check_tasks([NEXT_ITEM, *self.heads])
        self.weighting, self.mask_history, self.top_k = weighting, mask_history, max(ks)
        self.val_ranks, self.test_ranks = RankAccumulator(list(ks)), RankAccumulator(list(ks))
        self._loss_sums: dict[str, Tensor] = {}
        self._steps = 0

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None:  # testing on bare dataloaders (recforge-eval calls fit_parts itself)
            return
        self.fit_parts(datamodule)
        if stage == "fit":
            for task in self.heads.values():
                task.head.init_global_bias(task.metrics.initial_bias(datamodule.train_means[task.label]))

    def fit_parts(self, datamodule: Any) -> None:
        """The training popularity of every item, for the ranking's beyond-accuracy metrics (coverage, gini, ...)."""
        counts = datamodule.training_data.item_counts  # (N+1,)
        for acc in (self.val_ranks, self.test_ranks):
            acc.num_items, acc.item_counts = len(counts) - 1, counts

    # ---- training -------------------------------------------------------------------------------------
    def pointwise_outputs(self, batch: dict[str, Tensor], names: list[str]) -> dict[str, Tensor]:
        """Raw outputs (B,) of the named heads, from one pass of the encoder over the samples' histories."""
        history = self.encoder.inference_input(batch["history"])  # (B, L)
        state = self.encoder.final_state(history)  # (B, H)
        return {name: self.heads[name].head(state, batch["user"], batch["item"]).float() for name in names}

    def training_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every trained task's mean loss over the targets of one batch of windows, from one encoder pass: the
        state before each target predicts it (next item) and its rating and intent (pointwise heads)."""
        inputs, targets = self.encoder.training_pairs(batch["items"])  # (B, L), (B, L)
        hidden = self.encoder(inputs)  # (B, L, H)
        valid = targets > 0  # (B, L)
        states, items = hidden[valid], targets[valid]  # (M, H), (M,)
        losses: dict[str, Tensor] = {}
        if self.weighting.trains(NEXT_ITEM):
            losses[NEXT_ITEM] = self.loss(states, items, self.decoder)
        names = [name for name in self.heads if self.weighting.trains(name)]
        if names:
            users = batch["user"][:, None].expand_as(targets)[valid]  # (M,)
            for name in names:
                task = self.heads[name]
                labels = batch[task.label][:, 1:][valid].float()  # (M,) the label of each target
                losses[name] = task.loss(task.head(states, users, items).float(), labels)
        return losses

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.training_losses(batch)
        total = self.weighting(losses)
        for name, value in {**losses, "loss": total}.items():  # per-epoch means, kept on the device
            self._loss_sums[name] = self._loss_sums.get(name, torch.zeros((), device=value.device)) + value.detach()
        self._steps += 1
        return total

    def on_train_epoch_start(self) -> None:
        self._loss_sums, self._steps = {}, 0

    def on_train_epoch_end(self) -> None:
        means = {name: float(value) / max(self._steps, 1) for name, value in self._loss_sums.items()}  # one sync
        if not all(torch.isfinite(torch.tensor(v)) for v in means.values()):
            raise TrainingDiverged(
                f"training loss became {means} in epoch {self.current_epoch}; lower optimizer.lr or check the data.")
        logged = {"train/loss": means.pop("loss", float("nan"))}
        logged.update({f"train/{name}/loss": value for name, value in means.items()})
        logged.update({f"train/{name}/weight": value for name, value in self.weighting.weights().items()})
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=1)

    # ---- evaluation -----------------------------------------------------------------------------------
    def _update(self, batch: dict[str, Tensor], dataloader_idx: int, stage: str) -> None:
        if dataloader_idx == 0:  # next-item samples: full ranking, earlier items masked
            hidden = self.encoder.final_state(self.encoder.inference_input(batch["input"]))  # (B, H)
            scores = self.decoder(hidden).float()  # (B, N+1)
            history = batch["history"] if self.mask_history else None
            ranks, top = ranks_and_top(scores, batch["target"], history, self.top_k, overwrite=True)  # (B,), (B, K)
            unreachable = (repeated_targets(batch["history"], batch["target"]) if self.mask_history
                           else torch.zeros_like(batch["target"], dtype=torch.bool))
            (self.val_ranks if stage == "val" else self.test_ranks).update(batch["index"], ranks, unreachable, top)
            return
        for name, out in self.pointwise_outputs(batch, list(self.heads)).items():
            task = self.heads[name]
            (task.val_acc if stage == "val" else task.test_acc).update(batch["index"], out, batch[task.label])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(batch, dataloader_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(batch, dataloader_idx, "test")

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_all("val")
        if not self.trainer.sanity_checking:
            self.val_history.append((self.current_epoch, metrics))

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._log_all("test")

    def _log_all(self, stage: str) -> dict[str, float]:
        """Every head's metrics as ``<task>/<metric>`` over its own unique samples, logged as ``stage/<task>/<metric>``."""
        ranks = self.val_ranks if stage == "val" else self.test_ranks
        metrics = {f"{NEXT_ITEM}/{k}": v for k, v in ranks.compute().items()}
        self.evaluated_samples[f"{stage}/{NEXT_ITEM}"] = ranks.num_samples  # and stage/<head> below; stage: all
        ranks.reset()
        for name, task in self.heads.items():
            acc = task.val_acc if stage == "val" else task.test_acc
            outputs, labels = acc.compute()  # (S,), (S,)
            acc.reset()
            self.evaluated_samples[f"{stage}/{name}"] = int(labels.numel())
            metrics.update({f"{name}/{k}": v for k, v in task.metrics(outputs, labels).items()})
        self.evaluated_samples[stage] = sum(n for key, n in self.evaluated_samples.items() if key.startswith(f"{stage}/"))
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=True, reduce_fx="max",
                      add_dataloader_idx=False)
        return metrics

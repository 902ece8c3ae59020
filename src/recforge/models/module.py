"""LightningModule for next-item prediction; receives its parts already built (no config inside)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from recforge.errors import TrainingDiverged
from recforge.evaluation.ranking import (
    RankAccumulator,
    chunked_target_ranks,
    rank_targets,
)
from recforge.models.decoders import score_columns
from recforge.models.encoders.base import FitsData, SequenceEncoder
from recforge.rng import rng_states, set_rng_states


def has_nan(scores: Tensor) -> Tensor:
    """Whether any score is NaN, as a 0-dim bool tensor (no host sync): the maximum propagates NaN, and one
    reduction costs a tenth of ``torch.isnan(scores).any()`` (which writes a bool matrix first)."""
    return torch.isnan(scores.amax())


class NextItemModule(L.LightningModule):
    """Loss at every position of each training window; full ranking for validation and test.

    ``item_chunk_size``: None scores all items of an evaluation batch at once (memory O(B x N)); an integer
    ranks targets over that many item columns at a time (memory O(B x chunk)) with the same ranks.
    """

    def __init__(
        self,
        encoder: SequenceEncoder,
        decoder: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        ks: tuple[int, ...] = (5, 10, 20),
        mask_history: bool = True,
        item_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.loss = encoder, decoder, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.mask_history, self.item_chunk_size = mask_history, item_chunk_size
        self.val_ranks, self.test_ranks = RankAccumulator(list(ks)), RankAccumulator(list(ks))
        self._loss_sum, self._loss_count = torch.zeros(()), torch.zeros((), dtype=torch.long)  # this epoch's
        self.val_history: list[tuple[int, dict[str, float]]] = []  # (epoch, float64 metrics) per validation
        self.test_metrics: dict[str, float] = {}
        self.evaluated_samples: dict[str, int] = {}  # unique samples behind the last val/test metrics
        self.loaded_epoch: int | None = None

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is None:  # testing on bare dataloaders: counts come from the loaded state
            return
        counts = datamodule.item_counts
        for part in self.modules():
            if isinstance(part, FitsData):
                part.fit_data(counts)

    # ---- training -------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = self.encoder.training_pairs(batch["items"])  # (B, L), (B, L)
        hidden = self.encoder(inputs)  # (B, L, H)
        valid = targets > 0  # (B, L)
        loss = self.loss(hidden[valid], targets[valid], self.decoder)  # hidden[valid]: (M, H)
        # train/loss is logged once per epoch (on_train_epoch_end) from sums kept on the device: no host sync for
        # a batch size and no logging call per step
        count = valid.sum()  # M, a tensor
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach() * count
        self._loss_count = self._loss_count.to(loss.device) + count
        return loss

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_count = torch.zeros(()), torch.zeros((), dtype=torch.long)

    def on_train_epoch_end(self) -> None:
        self._check_loss()
        if self._loss_count > 0:  # the target-weighted mean, as self.log(loss, batch_size=M) at every step gives
            self.log("train/loss", self._loss_sum / self._loss_count, on_step=False, on_epoch=True, prog_bar=True,
                     batch_size=1)

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:  # a diverged loss is named first
            self._check_loss()

    def _check_loss(self) -> None:
        total = float(self._loss_sum)  # one host sync per epoch, not per step; not finite iff a step's loss was not
        if not math.isfinite(total):
            raise TrainingDiverged(
                f"training loss became {total} in epoch {self.current_epoch}; lower optimizer.lr or check the data."
            )

    # ---- evaluation -----------------------------------------------------------------------------------
    def hidden_state(self, recent: Tensor) -> Tensor:
        """The state that predicts the next item after ``recent`` (B, L) -> (B, H)."""
        return self.encoder(self.encoder.inference_input(recent))[:, -1]  # (B, H)

    def score(self, recent: Tensor) -> Tensor:
        """Scores over all item ids for the next item after ``recent`` (B, L) -> (B, N+1), float32."""
        return self.decoder(self.hidden_state(recent)).float()

    def _rank(self, batch: dict[str, Tensor]) -> Tensor:
        history = batch["history"] if self.mask_history else None
        if self.item_chunk_size is not None:
            return self._rank_chunked(batch["input"], batch["target"], history, self.item_chunk_size)
        scores = self.score(batch["input"])  # (B, N+1)
        self._check_scores(has_nan(scores))
        return rank_targets(scores, batch["target"], history)  # (B,)

    def _rank_chunked(self, recent: Tensor, targets: Tensor, history: Tensor | None, chunk: int) -> Tensor:
        """Ranks of ``targets`` scoring ``chunk`` item columns at a time; the target's score is computed once."""
        hidden = self.hidden_state(recent)  # (B, H)
        target_scores = self.decoder.score_items(hidden, targets.unsqueeze(1))[:, 0]  # (B,)
        nan_chunks: list[Tensor] = []

        def columns(start: int, end: int) -> Tensor:
            scores = score_columns(self.decoder, hidden, start, end)  # (B, end - start)
            nan_chunks.append(has_nan(scores))
            return scores

        ranks = chunked_target_ranks(columns, target_scores, targets, history, self.decoder.num_items + 1, chunk)
        self._check_scores(torch.stack(nan_chunks).any())
        return ranks  # (B,)

    def _check_scores(self, has_nan: Tensor) -> None:
        if has_nan:  # one host sync per evaluation batch, next to a full ranking
            raise TrainingDiverged(
                f"the model's scores became NaN (epoch {self.current_epoch}); lower optimizer.lr or check the data."
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.val_ranks.update(batch["index"], self._rank(batch))

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.test_ranks.update(batch["index"], self._rank(batch))

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_ranks("val", self.val_ranks)
        if not self.trainer.sanity_checking:
            self.val_history.append((self.current_epoch, metrics))

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._log_ranks("test", self.test_ranks)

    def _log_ranks(self, stage: str, acc: RankAccumulator) -> dict[str, float]:
        metrics = acc.compute()  # float64, over unique samples of every process
        self.evaluated_samples[stage] = acc.num_samples
        acc.reset()
        # every process already holds the same values (the accumulator gathered all ranks); reducing them by
        # max keeps them exact and tells Lightning they are synced (no per-metric warning under DDP)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, prog_bar=False, sync_dist=True,
                      reduce_fx="max")
        return metrics

    # ---- checkpoint extras: the validation history survives a resume --------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_history"] = [[epoch, metrics] for epoch, metrics in self.val_history]
        checkpoint["rng_states"] = rng_states()  # an exact resume draws what the uninterrupted run would

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = [(int(epoch), dict(metrics)) for epoch, metrics in checkpoint.get("val_history", [])]
        self.loaded_epoch = int(checkpoint["epoch"])  # the epoch whose weights are now in the model
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            set_rng_states(checkpoint["rng_states"])

    # ---- optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

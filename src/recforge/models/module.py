"""LightningModule for next-item prediction; receives its parts already built (no config inside)."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from recforge.errors import TrainingDiverged
from recforge.evaluation.ranking import (
    HistoryMask,
    RankAccumulator,
    RunningTop,
    chunked_target_ranks,
    history_contains,
    history_fill,
    ranks_and_top,
    repeated_targets,
)
from recforge.evaluation.sampled import CANDIDATES_DIR, SampledRanking, sampled_ranks
from recforge.models.decoders import Decoder, score_columns
from recforge.models.distill import Distillation
from recforge.models.embedders import HasIdAndContent, text_neighbour_rows
from recforge.models.encoders.base import FitsData, SequenceEncoder
from recforge.models.losses import NextItemLoss
from recforge.models.pruning import refresh_pruned
from recforge.models.task_module import TaskModule

SLICES = ("warm", "cold")


def target_slices(cold: Tensor) -> dict[str, Tensor]:
    """Rows of a batch per target slice: {"warm": ~cold, "cold": cold}; ``cold`` (B,) bool."""
    return {"warm": ~cold, "cold": cold}


def has_nan(scores: Tensor) -> Tensor:
    """Whether any score is NaN, as a 0-dim bool tensor (no host sync): the maximum propagates NaN, and one
    reduction costs a tenth of ``torch.isnan(scores).any()`` (which writes a bool matrix first)."""
    return torch.isnan(scores.amax())


class WithoutItems:
    """A decoder whose full scores put the ``excluded`` item ids at -inf: cold items are no candidates of a
    full-softmax training loss (their softmax probability, hence every gradient through them, is 0)."""

    def __init__(self, decoder: nn.Module, excluded: Tensor) -> None:
        self.decoder = decoder
        self.bias = torch.zeros(excluded.shape, device=excluded.device).masked_fill(excluded, float("-inf"))  # (N+1,)

    @property
    def num_items(self) -> int:
        return self.decoder.num_items

    def __call__(self, hidden: Tensor) -> Tensor:
        """hidden: (M, H) -> (M, N+1) scores, excluded ids at -inf."""
        scores = self.decoder(hidden)  # (M, N+1)
        return scores + self.bias.to(scores.device, scores.dtype)

    def linear_scores(self) -> tuple[Tensor, Tensor] | None:
        """The decoder's affine map with the excluded ids' bias at -inf (None if the decoder has none)."""
        parts = self.decoder.linear_scores()
        if parts is None:
            return None
        weights, bias = parts  # (N+1, H), (N+1,)
        return weights, bias + self.bias.to(bias.device, bias.dtype)

    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Scores of chosen items (M, K); a sampled loss's sampler never draws excluded ids."""
        return self.decoder.score_items(hidden, items)

    def score_shared(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Scores of shared items (M, K); a shared sampler never draws excluded ids."""
        return self.decoder.score_shared(hidden, items)


class NextItemModule(TaskModule):
    """Loss at every position of each training window; full ranking for validation and test.

    ``mask_history`` (recforge.evaluation.ranking.HistoryMask): ``True`` puts every earlier item of the user at
    -inf, a target that repeats one too (it is unreachable and counted in ``val/unreachable``); ``False`` masks
    nothing; ``"s3rec"`` sets their scores to 0 as the S3-Rec code does. The mask never depends on the target.

    ``item_chunk_size``: None scores all items of an evaluation batch at once (memory O(B x N)); an integer
    ranks targets over that many item columns at a time (memory O(B x chunk)) with the same ranks.

    A sample has one target (batch key ``target``) or a set (``targets`` (B, T), 0 = padding: a global time
    split); every target is ranked among all items and the set metrics follow (precision, recall, ndcg, map, hr,
    mrr @k; one target: the usual ones). Full ranking also keeps each sample's top max(ks) items after the mask,
    for coverage, avg_popularity, novelty and gini @k of every run.

    ``sampled`` (``evaluation.sampled``, recforge.evaluation.sampled.SampledRanking): each target is ranked among
    itself and N negatives drawn once per sample (never the user's items) instead of all items; only to reproduce
    papers that report sampled metrics. ``item_chunk_size`` is then unused.

    Cold-start split (the datamodule's ``cold_items`` mask, ``dataset.cold_items`` > 0): cold items are excluded
    from the training loss (logits at -inf, never drawn as negatives), and validation and test also log every
    metric over the samples whose target is warm (``val/warm/ndcg@10``) and cold (``val/cold/ndcg@10``).
    ``cold_id_neighbours`` = k > 0 gives cold items of embedders with an id table and content (hybrid: text; multi:
    its other sources, :class:`~recforge.models.embedders.HasIdAndContent`), before every evaluation, the mean id
    row of their k most content-similar warm items in place of their never-trained random row (0: keep it).
    """

    sample_kind = "sequences"  # what it reads; its datamodule declares the same (checked by recforge.run.validate)

    def __init__(
        self,
        encoder: SequenceEncoder,
        decoder: Decoder,
        loss: NextItemLoss,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        ks: tuple[int, ...] = (5, 10, 20),
        mask_history: HistoryMask = True,
        item_chunk_size: int | None = None,
        cold_id_neighbours: int = 0,
        sampled: SampledRanking | None = None,
        weigh_targets_equally: bool = False,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.encoder, self.decoder, self.loss = encoder, decoder, loss
        self.mask_history, self.item_chunk_size = mask_history, item_chunk_size
        self.history_fill = history_fill(mask_history)  # -inf, 0.0 (S3-Rec's rule) or None (no mask)
        self.cold_id_neighbours = cold_id_neighbours
        # evaluation.sampled (recforge.evaluation.sampled): rank among N drawn negatives; None (or negatives None):
        # full ranking. Not an nn.Module: nothing of it is in the state dict (checkpoints are unchanged).
        self.sampled = sampled if sampled is not None and sampled.negatives is not None else None
        # each accumulator also keeps every sample's top max(ks) list (beyond-accuracy metrics, once it knows the
        # training popularity: set_item_popularity)
        self.top_k = max(ks)
        self.val_ranks, self.test_ranks = RankAccumulator(list(ks)), RankAccumulator(list(ks))
        # per target slice (cold-start split): one accumulator each, fed with that slice of every batch
        self.val_slices = nn.ModuleDict({name: RankAccumulator(list(ks)) for name in SLICES})
        self.test_slices = nn.ModuleDict({name: RankAccumulator(list(ks)) for name in SLICES})
        self._batch_top: Tensor | None = None  # (B, K) the top lists the last full ranking produced
        self.cold_items: Tensor | None = None  # (N+1,) bool, set by setup() when the data has cold items
        self._loss_sum, self._loss_count = torch.zeros(()), torch.zeros((), dtype=torch.long)  # this epoch's
        # task.weigh_targets_equally: a batch's loss is scaled by its targets over the mean targets per batch so
        # far (every step since the start of training; kept in checkpoints), so every training target weighs the
        # same over an epoch, as in random batches; False: each batch's mean (see weigh_by_targets)
        self.weigh_targets_equally = weigh_targets_equally
        self._targets_seen, self._steps_seen = torch.zeros((), dtype=torch.float64), 0
        # distill.teacher (recforge.run.compress.attach_teacher): the usual loss mixed with the KD term of a frozen
        # teacher; not an nn.Module, so the teacher is in neither checkpoints nor the optimizer
        self.distillation: Distillation | None = None

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is None:  # testing on bare dataloaders: data-fitted state comes from the loaded state
            return
        self.fit_parts(datamodule)

    def fit_parts(self, datamodule: Any) -> None:
        """State that comes from the training data rather than from gradients: data-fitted parts (popularity
        counts, ItemKNN similarities) and the cold-start split's excluded items. Lightning calls it through
        ``setup``; code that scores without a trainer (recforge-fuse) calls it directly."""
        for part in self.modules():
            if isinstance(part, FitsData):
                part.fit_data(datamodule.training_data)
        self.set_item_popularity(datamodule.training_data.item_counts)
        cold = getattr(datamodule, "cold_items", None)
        self.cold_items = cold if cold is not None and bool(cold.any()) else None
        if self.cold_items is not None and isinstance(self.loss, NextItemLoss):
            self.loss.exclude_items(self.cold_items)
        if self.sampled is not None:  # popularity weights from the training counts; the samples of each stage
            self.sampled.fit(datamodule.training_data.item_counts,
                             {"val": ("val", datamodule.val_set), "test": ("test", datamodule.test_set)})

    def set_item_popularity(self, item_counts: Tensor) -> None:
        """Training interactions per item id (N+1,): the catalogue and popularity of the beyond-accuracy metrics
        (coverage, gini, avg_popularity, novelty); without it they are not computed."""
        for acc in (self.val_ranks, self.test_ranks, *self.val_slices.values(), *self.test_slices.values()):
            acc.num_items, acc.item_counts = len(item_counts) - 1, item_counts

    # ---- training -------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        refresh_pruned(self)  # prune.amount: weights that are read without calling their module (out_proj)
        inputs, targets = self.encoder.training_pairs(batch["items"])  # (B, L), (B, L)
        hidden = self.encode(inputs, batch.get("user"))  # (B, L, H)
        valid = targets > 0  # (B, L)
        if "new_targets" in batch:  # overlapping windows (dataset.train_stride): only the window's own last targets
            first_own = targets.shape[1] - batch["new_targets"]  # (B,)
            valid &= torch.arange(targets.shape[1], device=targets.device) >= first_own[:, None]
        decoder = self.decoder if self.cold_items is None else WithoutItems(self.decoder, self.cold_items)
        if self.encoder.state_per_window:  # one state per window (the user's): the loss may score each once
            rows = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]  # (M,)
            loss = self.loss.shared_states(hidden[:, 0], rows, targets[valid], decoder)  # hidden[:, 0]: (B, H)
        else:
            loss = self.loss(hidden[valid], targets[valid], decoder)  # hidden[valid]: (M, H)
        if self.distillation is not None:  # the student's scores of every item (M, N+1) against the teacher's
            loss = self.distillation(loss, inputs, valid, decoder(hidden[valid]))
        if self.weigh_targets_equally:
            loss = self.weigh_by_targets(loss, valid.sum())
        # train/loss is logged once per epoch (on_train_epoch_end) from sums kept on the device: no host sync for
        # a batch size and no logging call per step
        count = valid.sum()  # M, a tensor
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach() * count
        self._loss_count = self._loss_count.to(loss.device) + count
        return loss

    def weigh_by_targets(self, loss: Tensor, count: Tensor) -> Tensor:
        """A batch's mean loss over its ``count`` targets, times count / the mean count per training step so far
        (this one included): each target then weighs about the same in every batch. Length-bucketed batches
        (dataset.bucket_by_length) otherwise weigh the targets of short-sequence batches more than those of long
        ones (a batch of 256 users with 2 targets each gets the step of one with 50 each), unlike random batches."""
        self._targets_seen = self._targets_seen.to(count.device) + count
        self._steps_seen += 1
        return loss * (count * self._steps_seen / self._targets_seen).to(loss.dtype)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.weigh_targets_equally:  # a resumed run goes on with the same running mean
            checkpoint["targets_per_step"] = (float(self._targets_seen), self._steps_seen)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "targets_per_step" in checkpoint:
            seen, steps = checkpoint["targets_per_step"]
            self._targets_seen, self._steps_seen = torch.tensor(seen, dtype=torch.float64), int(steps)

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_count = torch.zeros(()), torch.zeros((), dtype=torch.long)

    def on_train_epoch_end(self) -> None:
        self._check_loss()
        if self._loss_count > 0:  # the target-weighted mean, as self.log(loss, batch_size=M) at every step gives
            self.log("train/loss", self._loss_sum / self._loss_count, on_step=False, on_epoch=True, prog_bar=True,
                     batch_size=1)

    def on_validation_epoch_start(self) -> None:
        refresh_pruned(self)  # prune.amount: the eval fast path reads pruned weights without their hook
        self._impute_cold_ids()
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:  # a diverged loss is named first
            self._check_loss()

    def _check_loss(self) -> None:
        total = float(self._loss_sum)  # one host sync per epoch, not per step; not finite iff a step's loss was not
        if not math.isfinite(total):
            raise TrainingDiverged(
                f"training loss became {total} in epoch {self.current_epoch}; lower optimizer.lr or check the data."
            )

    # ---- evaluation -----------------------------------------------------------------------------------
    def encode(self, inputs: Tensor, users: Tensor | None = None) -> Tensor:
        """The encoder's hidden states (B, T, H); ``users`` (B,) reaches only an encoder with ``uses_users``."""
        if self.encoder.uses_users:
            return self.encoder(inputs, users=users)
        return self.encoder(inputs)

    def hidden_state(self, recent: Tensor, users: Tensor | None = None) -> Tensor:
        """The state that predicts the next item after ``recent`` (B, L) (of users (B,), for encoders that read
        them) -> (B, H)."""
        inputs = self.encoder.inference_input(recent)  # (B, T)
        if self.encoder.uses_users:
            return self.encode(inputs, users)[:, -1]  # (B, H)
        return self.encoder.final_state(inputs)  # (B, H): only what the last position needs

    def score(self, recent: Tensor, users: Tensor | None = None) -> Tensor:
        """Scores over all item ids for the next item after ``recent`` (B, L) -> (B, N+1), float32."""
        return self.decoder(self.hidden_state(recent, users)).float()

    def rank(self, batch: dict[str, Tensor]) -> Tensor:
        """The ranks of an evaluation batch's targets, as validation and test compute them (history mask, full,
        item-chunked or sampled ranking): (B,), or (B, T) for target sets with 0 = padding. Full ranking also
        leaves the batch's top lists in ``_batch_top``."""
        if self.sampled is not None:  # the target among N sampled negatives (item_chunk_size is not needed)
            return self._rank_sampled(batch)
        history = batch["history"] if self.history_fill is not None else None
        users = batch.get("user")
        targets = batch["targets"] if "targets" in batch else batch["target"]  # (B, T) target sets, or (B,)
        if self.item_chunk_size is not None:
            return self._rank_chunked(batch["input"], targets, history, self.item_chunk_size, users)
        scores = self.score(batch["input"], users)  # (B, N+1)
        self._check_scores(has_nan(scores))
        # the scores are masked in place: nothing reads them afterwards (one (B, N+1) buffer less per batch)
        ranks, self._batch_top = ranks_and_top(scores, targets, history, self.top_k, self._fill, overwrite=True)
        return ranks  # (B,), or (B, T) with 0 = padding

    def _rank_sampled(self, batch: dict[str, Tensor]) -> Tensor:
        """Ranks of the targets among themselves and their N sampled negatives (``evaluation.sampled``), scored by
        the decoder's ``score_items`` (no full scoring). Negatives are never the user's items, so the history mask
        concerns only a target that repeats one (masked as in full ranking: unreachable under ``true``). (B,)."""
        assert self.sampled is not None
        stage = "test" if self.trainer.testing else "val"
        directory = Path(self.trainer.default_root_dir) / CANDIDATES_DIR if self.trainer.is_global_zero else None
        negatives = self.sampled.negatives_for(stage, batch["index"], directory)  # (B, N), same on every process
        candidates = torch.cat([batch["target"].unsqueeze(1), negatives.to(batch["target"].device)], dim=1)  # (B, 1+N)
        hidden = self.hidden_state(batch["input"], batch.get("user"))  # (B, H)
        scores = self.decoder.score_items(hidden, candidates).float()  # (B, 1+N)
        self._check_scores(has_nan(scores))
        masked = repeated_targets(batch["history"], batch["target"]) if self.history_fill is not None else None
        return sampled_ranks(scores, masked, self._fill)  # (B,)

    @property
    def _fill(self) -> float:
        return float("-inf") if self.history_fill is None else self.history_fill

    def unreachable_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """(B,) bool, or (B, T) for target sets: targets the history mask puts at -inf (a repeated item under
        ``mask_history=True``)."""
        targets = batch["targets"] if "targets" in batch else batch["target"]  # (B, T) or (B,)
        if self.history_fill != float("-inf") or "history" not in batch:
            return torch.zeros_like(targets, dtype=torch.bool)
        if targets.dim() == 2:
            return history_contains(batch["history"], targets)
        return repeated_targets(batch["history"], targets)

    def _rank_chunked(self, recent: Tensor, targets: Tensor, history: Tensor | None, chunk: int,
                      users: Tensor | None = None) -> Tensor:
        """Ranks of ``targets`` (B,) or target sets (B, T) scoring ``chunk`` item columns at a time; the targets'
        scores are computed once, the top lists kept over the chunks (the same as full ranking's)."""
        hidden = self.hidden_state(recent, users)  # (B, H)
        sets = targets.unsqueeze(1) if targets.dim() == 1 else targets  # (B, T)
        target_scores = self.decoder.score_items(hidden, sets)  # (B, T)
        target_scores = target_scores[:, 0] if targets.dim() == 1 else target_scores
        nan_chunks: list[Tensor] = []
        top = RunningTop(self.top_k)

        def columns(start: int, end: int) -> Tensor:
            scores = score_columns(self.decoder, hidden, start, end)  # (B, end - start)
            nan_chunks.append(has_nan(scores))
            return scores

        ranks = chunked_target_ranks(columns, target_scores, targets, history, self.decoder.num_items + 1, chunk,
                                     self._fill, on_chunk=top.add)
        self._check_scores(torch.stack(nan_chunks).any())
        self._batch_top = top.ids  # (B, K)
        return ranks  # (B,) or (B, T)

    def _check_scores(self, has_nan: Tensor) -> None:
        if has_nan:  # one host sync per evaluation batch, next to a full ranking
            raise TrainingDiverged(
                f"the model's scores became NaN (epoch {self.current_epoch}); lower optimizer.lr or check the data."
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._update(batch, self.val_ranks, self.val_slices)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._update(batch, self.test_ranks, self.test_slices)

    def _update(self, batch: dict[str, Tensor], ranks_acc: RankAccumulator, slices: nn.ModuleDict) -> None:
        """Ranks of the batch (and the top lists of full ranking) into the overall accumulator and, with cold
        items, into the warm/cold ones."""
        self._batch_top = None
        ranks = self.rank(batch)  # (B,) or (B, T) for target sets
        unreachable = self.unreachable_targets(batch)  # like ranks
        top = self._batch_top  # (B, K), None when the ranking gave no lists (sampled ranking)
        ranks_acc.update(batch["index"], ranks, unreachable, top)
        if self.cold_items is not None:  # leave-one-out only: one target per sample
            cold = self.cold_items.to(ranks.device)[batch["target"]]  # (B,) bool
            for name, rows in target_slices(cold).items():
                slices[name].update(batch["index"][rows], ranks[rows], unreachable[rows],
                                    None if top is None else top[rows])

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_ranks("val", self.val_ranks, self.val_slices)
        if not self.trainer.sanity_checking:
            self.val_history.append((self.current_epoch, metrics))

    def on_test_epoch_start(self) -> None:
        refresh_pruned(self)
        self._impute_cold_ids()

    def _impute_cold_ids(self) -> None:
        """``cold_id_neighbours`` = k > 0: the never-trained id rows of cold items in id + text embedders become
        the mean id row of their k most text-similar warm items (recforge.models.embedders.text_neighbour_rows).
        Training never reads these rows (cold items are in no window and their logits are -inf), so they are
        simply refreshed before every evaluation from the current warm rows."""
        if self.cold_items is None or self.cold_id_neighbours < 1:
            return
        for part in self.modules():
            pair = part.id_and_content() if isinstance(part, HasIdAndContent) else None
            if pair is None:
                continue
            ids, content = pair
            weight = ids.table.weight  # (N+2, H)
            cold = self.cold_items.to(weight.device)  # (N+1,)
            with torch.no_grad():
                rows = text_neighbour_rows(weight[: len(cold)], content[: len(cold)], cold,
                                           self.cold_id_neighbours)  # (C, H)
                weight[: len(cold)][cold] = rows.to(weight.dtype)

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._log_ranks("test", self.test_ranks, self.test_slices)

    def _log_ranks(self, stage: str, acc: RankAccumulator, slices: nn.ModuleDict) -> dict[str, float]:
        metrics = acc.compute()  # float64, over unique samples of every process
        self.evaluated_samples[stage] = acc.num_samples
        acc.reset()
        if self.cold_items is not None:  # e.g. val/warm/hr@10, val/cold/ndcg@10 over that slice's samples
            for name, slice_acc in slices.items():
                values = slice_acc.compute()  # over this slice's unique samples of every process
                self.evaluated_samples[f"{stage}/{name}"] = slice_acc.num_samples
                slice_acc.reset()
                if self.evaluated_samples[f"{stage}/{name}"]:  # an empty slice has no metrics (not NaN)
                    metrics.update({f"{name}/{k}": v for k, v in values.items()})
        # every process already holds the same values (the accumulator gathered all ranks); reducing them by
        # max keeps them exact and tells Lightning they are synced (no per-metric warning under DDP)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, prog_bar=False, sync_dist=True,
                      reduce_fx="max")
        return metrics

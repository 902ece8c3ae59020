"""What a run prints: a quiet start, the objective and its best value in the progress bar, a summary at the end.

Lightning callbacks, wired in ``conf/callbacks/*.yaml``:

- :class:`QuietLightning` drops Lightning's start-up chatter (the "Tip" advertisements, the GPU/TPU
  availability lines) and one third-party deprecation warning, each by a narrow filter;
- :class:`CompactModelSummary` prints the model in one line (Lightning's table has a FLOPs column that reads 0:
  the modules declare no example input);
- :class:`ObjectiveProgressBar` shows the configured ``objective`` (default ``val/ndcg@10``) and its best value so
  far next to the training loss (the modules log validation metrics with ``prog_bar=False``);
- :class:`RunSummary` prints the best epoch, the test metrics at the objective's K and the run directory.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelSummary, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

MODES = ("max", "min")


class BestValue:
    """The best value of an objective seen so far and its epoch. Only a strictly better value replaces it, as in
    ModelCheckpoint (whose best checkpoint is the one tested); NaN never does."""

    def __init__(self, mode: str = "max") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.value: float | None = None
        self.epoch: int | None = None

    def update(self, value: Any, epoch: int | None = None) -> bool:
        """Take ``value`` (a number or 0-d tensor) of ``epoch``; True when it is the new best."""
        value = float(value)
        if math.isnan(value):
            return False
        if self.value is None or (value > self.value if self.mode == "max" else value < self.value):
            self.value, self.epoch = value, epoch
            return True
        return False


def logged_value(trainer: L.Trainer, name: str) -> float | None:
    """The last value logged under ``name`` (None when it was not logged)."""
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def _validated_in_fit(trainer: L.Trainer) -> bool:
    """A validation of the fit loop (not the sanity check, not a stand-alone ``trainer.validate``)."""
    return trainer.state.fn == "fit" and not trainer.sanity_checking


def _best_so_far_from_checkpoint(trainer: L.Trainer, objective: str, best: BestValue) -> None:
    """A resumed run: ModelCheckpoint restored the best score of the epochs before the interruption."""
    ckpt = trainer.checkpoint_callback
    score = getattr(ckpt, "best_model_score", None)
    if score is not None and getattr(ckpt, "monitor", None) == objective:
        best.update(score)


# ------------------------------------------------------------------------------------------------ quiet start

# messages of Lightning's rank_zero_info that say nothing about this run: advertisements for Lightning's cloud
# products (LitLogger, LitModelCheckpoint) and which accelerators exist (the trainer config says which is used)
LIGHTNING_NOISE = ("💡 Tip:", "GPU available:", "TPU available:")
# the loggers rank_zero_info writes to (lightning.pytorch sets it; lightning.fabric's module sets it too)
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class DropMessages(logging.Filter):
    """Drops the log records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_lightning() -> None:
    """Install the filters of :class:`QuietLightning` (once; calling it again changes nothing)."""
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(LIGHTNING_NOISE))
    # torch (2.13 here) deprecates `LeafSpec`; Lightning's own pytree helper (2.6.6 here) still constructs one
    # (lightning/pytorch/utilities/_pytree.py). Not ours to fix, so this one warning is ignored where it is
    # raised: that module, that message, that category (warnings.filterwarnings replaces an equal filter).
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning,
                            module=r"(lightning\.pytorch|pytorch_lightning)\.utilities\._pytree")


class QuietLightning(Callback):
    """Keeps Lightning's start-up output to what concerns the run (see :func:`quiet_lightning`).

    It acts when it is built: the messages it drops are printed while the Trainer itself is built, and Hydra builds
    the callbacks first. ``callbacks.quiet=null`` brings them back."""

    def __init__(self) -> None:
        super().__init__()
        quiet_lightning()


# ------------------------------------------------------------------------------------------------ model summary

def model_line(rows: Mapping[str, list[str]], trainable: int, total: int, size_mb: float) -> str:
    """One line for Lightning's summary columns (Name, Type, Params of the top-level modules; parts without
    parameters are left out), e.g. ``model: encoder SASRec (129 K), decoder DotProduct (25.7 K); 129 K trainable
    parameters of 129 K (0.52 MB)``. Shared weights (tied item embeddings) count in each part, once in the totals."""
    from lightning.pytorch.utilities.model_summary import get_human_readable_count

    def count(n: int) -> str:
        return get_human_readable_count(n).strip()

    parts = [f"{name} {kind} ({params.strip()})"
             for name, kind, params in zip(rows["Name"], rows["Type"], rows["Params"]) if params.strip() != "0"]
    return (f"model: {', '.join(parts) or 'no parameters'}; {count(trainable)} trainable parameters of "
            f"{count(total)} ({size_mb:.2f} MB)")


class CompactModelSummary(ModelSummary):
    """Lightning's model summary in one line, without its FLOPs column. Use it with the trainer's
    ``enable_model_summary: false`` (conf/trainer), which only stops Lightning from adding its own table."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        log.info(model_line(dict(summary_data), trainable_parameters, total_parameters, model_size))


# ------------------------------------------------------------------------------------------------ progress bar

class ObjectiveProgressBar(RichProgressBar):
    """Rich progress bar that also shows the objective's last validated value and the best so far:
    ``train/loss: 5.863 val/ndcg@10: 0.152 best: 0.160``. ``mode`` is the objective's direction (max or min)."""

    BEST = "best"

    def __init__(self, objective: str = "val/ndcg@10", mode: str = "max", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objective = objective
        self.best = BestValue(mode)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        _best_so_far_from_checkpoint(trainer, self.objective, self.best)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _validated_in_fit(trainer) and (value := logged_value(trainer, self.objective)) is not None:
            self.best.update(value, trainer.current_epoch)
        super().on_validation_end(trainer, pl_module)  # refreshes the metrics shown

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        if (value := logged_value(trainer, self.objective)) is not None:
            items[self.objective] = value
        if self.best.value is not None:
            items[self.BEST] = self.best.value
        return items


# ------------------------------------------------------------------------------------------------ summary

def objective_k(objective: str) -> str | None:
    """The cut-off K of a ranking objective (``val/ndcg@10`` -> ``10``); None for one without (``val/auc``)."""
    return objective.rsplit("@", 1)[1] if "@" in objective else None


def summary_metrics(objective: str, test: Mapping[str, float]) -> dict[str, float]:
    """The test metrics the summary shows: the overall ones (no warm/cold slices) at the objective's K, the
    objective's own first (all overall ones when the objective has no K); of task=multi, those of the objective's
    head (val/intent/auc: test/intent/...)."""
    k = objective_k(objective)
    task = "".join(f"{part}/" for part in objective.split("/")[1:-1])  # task=multi: "next_item/", "intent/"
    overall = {name: value for name, value in test.items()
               if name.startswith(f"test/{task}") and "/" not in name[len(f"test/{task}"):]}
    chosen = {name: value for name, value in overall.items() if k is None or name.endswith(f"@{k}")}
    first = "test/" + objective.split("/", 1)[-1]
    return dict(sorted(chosen.items(), key=lambda item: item[0] != first))


def summary_text(objective: str, mode: str, best_epoch: int | None, best_value: float | None,
                 test: Mapping[str, float], output_dir: str | None) -> str:
    """The lines printed at the end of a run, e.g.::

        summary: best epoch 1 (val/ndcg@10 = 0.1602, max)
          test: test/ndcg@10 0.1525 | test/hr@10 0.2450 | test/recall@10 0.2450 | test/mrr@10 0.1242
          run directory: outputs/runs/2026-12-02_05-57-24-171484

    Epochs count from 0, as in checkpoints/epoch<NNN>.ckpt and metrics.json's best_epoch."""
    if best_epoch is None and best_value is None:
        best = "no validated epoch"
    else:
        epoch = "?" if best_epoch is None else str(best_epoch)
        value = "?" if best_value is None else f"{best_value:.4f}"
        best = f"best epoch {epoch} ({objective} = {value}, {mode})"
    shown = summary_metrics(objective, test)
    lines = [f"summary: {best}",
             "  test: " + (" | ".join(f"{name} {value:.4f}" for name, value in shown.items()) or "no test metrics")]
    if output_dir:
        lines.append(f"  run directory: {output_dir}")
    return "\n".join(lines)


class RunSummary(Callback):
    """Prints :func:`summary_text` when testing ends (after Lightning's table of test metrics): the epoch of the
    tested checkpoint with its ``objective`` value, the test metrics at the objective's K, and ``output_dir``."""

    def __init__(self, objective: str = "val/ndcg@10", mode: str = "max", output_dir: str | None = None) -> None:
        super().__init__()
        self.objective, self.mode, self.output_dir = objective, mode, output_dir
        self.best = BestValue(mode)
        self._test: dict[str, float] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _best_so_far_from_checkpoint(trainer, self.objective, self.best)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _validated_in_fit(trainer) and (value := logged_value(trainer, self.objective)) is not None:
            self.best.update(value, trainer.current_epoch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._test = {name: float(value) for name, value in trainer.callback_metrics.items()
                      if name.startswith("test/")}

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test" or self._test is None:
            return
        # the epoch whose weights were tested (task modules record it when they load the best checkpoint)
        epoch = getattr(pl_module, "loaded_epoch", None)
        if epoch is None:
            epoch = self.best.epoch
        self._print(summary_text(self.objective, self.mode, epoch, self.best.value, self._test, self.output_dir))
        self._test = None

    @staticmethod
    @rank_zero_only
    def _print(text: str) -> None:
        log.info(text)

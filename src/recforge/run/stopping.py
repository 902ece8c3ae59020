"""Early stopping that honours the trainer's minimum training length.

Lightning's ``EarlyStopping`` latches its decision: once patience runs out it sets ``trainer.should_stop`` and
nothing clears it, so with ``trainer.min_steps`` (or ``min_epochs``) a run whose metric stalls early and then
recovers still stops the moment the minimum is met (Lightning issue #19966, open in 2.6). recforge's encoders use
the minimum to wait out a plateau (BERT4Rec's cloze task sits at Popularity's level for a few hundred steps), so
here a decision taken before the minimum is met is not latched: it is taken again at the next check, and
patience counts from the last improvement as before.
"""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping


def minimum_met(trainer: L.Trainer) -> bool:
    """Whether the epoch that just ended completes ``trainer.min_steps`` and ``trainer.min_epochs``."""
    min_steps, min_epochs = trainer.fit_loop.min_steps, trainer.fit_loop.min_epochs
    steps_met = not min_steps or trainer.global_step >= min_steps
    epochs_met = not min_epochs or trainer.current_epoch + 1 >= min_epochs
    return steps_met and epochs_met


class EarlyStopping(LightningEarlyStopping):
    """``lightning.pytorch.callbacks.EarlyStopping`` whose stop decisions count only once the minimum is met."""

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        stopping_before = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and not stopping_before and not minimum_met(trainer):
            trainer.should_stop = False  # ours, and too early to count: decided again at the next check
            self.stopped_epoch = 0

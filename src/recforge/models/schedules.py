"""Learning-rate schedules as pure multiplier functions wrapped in LambdaLR."""
from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from recforge.rules import UNIT_CLOSED, check_arguments, int_at_least, rule_table


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up from 0 to 1 over warmup_steps, then cosine decay to min_ratio at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(LambdaLR):
    """LambdaLR over :func:`warmup_cosine`; ``total_steps`` is filled in from the trainer."""

    # recforge.rules: checked in the config and here
    argument_rules = rule_table(warmup_steps=int_at_least(0), min_ratio=UNIT_CLOSED)

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 100, min_ratio: float = 0.0) -> None:
        check_arguments(WarmupCosine, "scheduler", warmup_steps=warmup_steps, min_ratio=min_ratio)
        super().__init__(optimizer, partial(warmup_cosine, warmup_steps=warmup_steps,
                                            total_steps=total_steps, min_ratio=min_ratio))

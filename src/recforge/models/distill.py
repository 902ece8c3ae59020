"""Knowledge distillation over the item catalogue (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
Network", 2015): a student learns from a trained teacher's softmax over all items at temperature T as well as
from the targets.

loss = (1 - alpha) * usual loss + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The KL term is averaged over the target positions; T^2 keeps its gradients on the scale of the usual loss as T
changes (Hinton et al., section 2).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recforge.rules import UNIT_CLOSED, check_arguments, number_above, rule_table


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T)); student, teacher: (M, N) scores.

    Columns where the teacher's score is -inf (padding, excluded items) contribute nothing."""
    log_p = torch.log_softmax(teacher.float() / temperature, dim=-1)  # (M, N) teacher
    log_q = torch.log_softmax(student.float() / temperature, dim=-1)  # (M, N) student
    terms = (log_p.exp() * (log_p - log_q)).masked_fill(torch.isneginf(log_p), 0.0)  # (M, N)
    return temperature**2 * terms.sum(dim=-1).mean()


class Distillation:
    """The KD term of a training step: the frozen ``teacher`` (an nn.Module with ``encoder`` and ``decoder``, e.g.
    recforge.deploy.model.Scorer) scores every item at the student's target positions; the result is mixed with
    the student's usual loss. Not an nn.Module: the teacher is in neither the student's state dict (checkpoints)
    nor its parameters (optimizer)."""

    argument_rules = rule_table(temperature=number_above(0.0), alpha=UNIT_CLOSED)

    def __init__(self, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5) -> None:
        check_arguments(Distillation, "distill", temperature=temperature, alpha=alpha)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def teacher_scores(self, inputs: Tensor, valid: Tensor) -> Tensor:
        """The teacher's scores at the positions ``valid`` (B, L) of ``inputs`` (B, L) -> (M, N+1)."""
        self.teacher.to(inputs.device).eval()  # stays in eval mode whatever the student's trainer does
        with torch.no_grad():
            hidden = self.teacher.encoder(inputs)  # (B, L, H_teacher)
            return self.teacher.decoder(hidden[valid]).float()  # (M, N+1)

    def __call__(self, loss: Tensor, inputs: Tensor, valid: Tensor, student: Tensor) -> Tensor:
        """loss: the student's usual loss; student: its scores at the positions ``valid`` (M, N+1) -> scalar."""
        teacher = self.teacher_scores(inputs, valid)  # (M, N+1)
        teacher = teacher.masked_fill(torch.isneginf(student), float("-inf"))  # the student's excluded ids too
        kd = distillation_loss(student, teacher, self.temperature)
        return (1.0 - self.alpha) * loss + self.alpha * kd

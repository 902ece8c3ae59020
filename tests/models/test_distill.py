"""Knowledge distillation: the KD loss against hand-computed values, the mix with the usual loss, a frozen teacher."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recforge.errors import RecforgeError
from recforge.models.distill import Distillation, distillation_loss


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_kd_loss_matches_a_hand_computed_value_at_t2() -> None:
    # teacher [2, 0] / T=2 -> softmax [1, 0] = [e/(e+1), 1/(e+1)] = [0.731059, 0.268941]; student [0, 0] -> [.5, .5]
    # KL = 0.731059 ln(1.462117) + 0.268941 ln(0.537883) = 0.277719 - 0.166774 = 0.110944; x T^2 = 0.443776
    teacher, student = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    got = distillation_loss(student, teacher, temperature=2.0)
    e = math.e
    assert got.item() == pytest.approx(4 * kl([e / (e + 1), 1 / (e + 1)], [0.5, 0.5]), rel=1e-6)
    assert got.item() == pytest.approx(0.443776, abs=1e-6)


def test_kd_loss_averages_rows_and_ignores_padding_columns() -> None:
    # row 1 as above (0.443776) with a padding column at -inf in both; row 2: student equals teacher, KL 0
    teacher = torch.tensor([[float("-inf"), 2.0, 0.0], [float("-inf"), 1.0, 3.0]])
    student = torch.tensor([[float("-inf"), 0.0, 0.0], [float("-inf"), 1.0, 3.0]])
    got = distillation_loss(student, teacher, temperature=2.0)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(0.443776 / 2, abs=1e-6)


def test_kd_loss_at_t1_is_plain_kl_and_has_a_finite_gradient() -> None:
    teacher = torch.tensor([[1.0, 0.0, -1.0]])
    student = torch.tensor([[0.0, 0.5, 0.0, ]], requires_grad=True)
    got = distillation_loss(student, teacher, temperature=1.0)
    p, q = torch.softmax(teacher, -1)[0].tolist(), torch.softmax(student.detach(), -1)[0].tolist()
    assert got.item() == pytest.approx(kl(p, q), rel=1e-6)
    got.backward()
    # d KL / d student = q - p (softmax cross-entropy gradient), times T^2 / T = 1 here
    torch.testing.assert_close(student.grad[0], torch.tensor(q) - torch.tensor(p))


class TinyTeacher(nn.Module):
    """encoder: ids (B, L) -> one-hot states (B, L, 3); decoder: states (M, 3) -> fixed scores (M, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Embedding(3, 3)
        self.decoder = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.eye(3))
            self.decoder.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))


def test_distillation_mixes_the_usual_loss_with_alpha_and_freezes_the_teacher() -> None:
    teacher = TinyTeacher().train()
    kd = Distillation(teacher, temperature=2.0, alpha=0.25)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    inputs = torch.tensor([[0, 1]])  # (1, 2); position 1 (id 1) scores [0, 2, 0]
    valid = torch.tensor([[False, True]])
    student = torch.tensor([[float("-inf"), 0.0, 0.0]])  # padding column: the teacher's is masked the same way
    # teacher [-inf, 2, 0] vs student [-inf, 0, 0]: KD 0.443776 (above); 0.75 * 1.0 + 0.25 * 0.443776
    got = kd(torch.tensor(1.0), inputs, valid, student)
    assert got.item() == pytest.approx(0.75 + 0.25 * 0.443776, abs=1e-6)


@pytest.mark.parametrize(("key", "value"), [("temperature", 0.0), ("alpha", 1.5)])
def test_distillation_refuses_bad_arguments(key: str, value: float) -> None:
    with pytest.raises((RecforgeError, ValueError), match=key):
        Distillation(TinyTeacher(), **{key: value})

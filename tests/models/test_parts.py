"""Tests for the model parts: negative sampler, LR schedule, losses, decoder, embedder and the encoders."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recforge.models.decoders import DotProduct
from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.bert4rec import BERT4Rec
from recforge.models.encoders.gru4rec import GRU4Rec
from recforge.models.encoders.sasrec import SASRec
from recforge.models.losses import BPR, CrossEntropy, SampledBCE
from recforge.models.samplers import UniformNegatives
from recforge.models.schedules import WarmupCosine, warmup_cosine


def softplus(x: float) -> float:
    """log(1 + e^x) = -log sigmoid(-x)."""
    return math.log1p(math.exp(x))


# ------------------------------------------------------------------------- UniformNegatives


def test_uniform_negatives_never_the_target_and_in_range():
    torch.manual_seed(0)
    n = 7
    targets = torch.randint(1, n + 1, (20000,))
    neg = UniformNegatives(5)(targets, n)
    assert neg.shape == (20000, 5) and neg.dtype == torch.int64
    assert (neg != targets[:, None]).all()
    assert neg.min() >= 1 and neg.max() <= n
    assert set(neg.unique().tolist()) == set(range(1, n + 1))


def test_uniform_negatives_uniform_over_other_items():
    torch.manual_seed(1)
    # target 3 of N = 7: the other 6 ids should each get 1/6 of 60000 draws = 10000 (+-5% is > 10 sigma)
    neg = UniformNegatives(10)(torch.full((6000,), 3), 7)
    counts = torch.bincount(neg.flatten(), minlength=8).tolist()
    assert counts[0] == 0 and counts[3] == 0
    for item in (1, 2, 4, 5, 6, 7):
        assert abs(counts[item] - 10000) < 500


def test_uniform_negatives_two_items_is_deterministic():
    # N = 2: the only negative of target 1 is 2 and of target 2 is 1
    neg = UniformNegatives(3)(torch.tensor([1, 2, 1]), 2)
    assert neg.tolist() == [[2, 2, 2], [1, 1, 1], [2, 2, 2]]


def test_uniform_negatives_rejects_zero():
    with pytest.raises(ValueError, match="num_negatives=0"):
        UniformNegatives(0)


# ------------------------------------------------------------------------- warmup_cosine


def test_warmup_cosine_values():
    w, total = 10, 110  # 10 warm-up steps, then 100 decay steps
    # warm-up: (step + 1) / 10
    assert warmup_cosine(0, w, total) == pytest.approx(0.1)
    assert warmup_cosine(4, w, total) == pytest.approx(0.5)
    assert warmup_cosine(9, w, total) == pytest.approx(1.0)  # last warm-up step
    assert warmup_cosine(10, w, total) == pytest.approx(1.0)  # decay starts at progress 0: cos(0) -> 1
    # quarter of the decay: 0.5 * (1 + cos(pi / 4)) = 0.5 + sqrt(2) / 4
    assert warmup_cosine(35, w, total) == pytest.approx(0.5 + math.sqrt(2) / 4)
    # halfway: 0.5 * (1 + cos(pi / 2)) = 0.5; with min_ratio 0.1: 0.1 + 0.9 * 0.5 = 0.55
    assert warmup_cosine(60, w, total) == pytest.approx(0.5)
    assert warmup_cosine(60, w, total, min_ratio=0.1) == pytest.approx(0.55)
    # end: cos(pi) = -1 -> min_ratio; after the end it stays there
    assert warmup_cosine(110, w, total) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(110, w, total, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, w, total, min_ratio=0.1) == pytest.approx(0.1)


def test_warmup_cosine_scheduler_drives_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = WarmupCosine(opt, total_steps=12, warmup_steps=4, min_ratio=0.0)
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warm-up: 2 * [1/4, 2/4, 3/4, 4/4]; decay over 8 steps: 2 * 0.5 * (1 + cos(pi * p)), p = 0, 1/8, ..., 1
    expected = [2 * (s + 1) / 4 for s in range(4)] + [2 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]
    assert lrs == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------- a tiny decoder with fixed embeddings


@pytest.fixture
def tiny_decoder() -> DotProduct:
    """3 items in 2-d: e1 = [1, 0], e2 = [0, 1], e3 = [1, 1] (row 0 padding, row 4 the [MASK] token)."""
    emb = IdEmbedding(num_items=3, hidden_size=2)
    with torch.no_grad():
        emb.table.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]]))
    return DotProduct(emb)


# hidden h1 = [1, 2] scores items 1, 2, 3 as 1, 2, 3; h2 = [0, 1] scores them 0, 1, 1
HIDDEN = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
TARGETS = torch.tensor([1, 2])  # target scores: 1 (h1, item 1) and 1 (h2, item 2)
NEGATIVES = torch.tensor([[2, 3], [1, 3]])  # negative scores: [2, 3] and [0, 1]


class FixedNegatives:
    """Stand-in sampler returning the same negatives every call; remembers num_items."""

    def __init__(self, negatives: torch.Tensor) -> None:
        self.negatives, self.calls = negatives, []

    def __call__(self, targets: torch.Tensor, num_items: int) -> torch.Tensor:
        self.calls.append((targets.tolist(), num_items))
        return self.negatives


def test_dot_product_scores(tiny_decoder):
    scores = tiny_decoder(HIDDEN)
    inf = float("-inf")
    torch.testing.assert_close(scores, torch.tensor([[inf, 1.0, 2.0, 3.0], [inf, 0.0, 1.0, 1.0]]))
    assert tiny_decoder.num_items == 3
    # score_items of [[1, 3], [2, 2]]: [[1, 3], [1, 1]]
    torch.testing.assert_close(tiny_decoder.score_items(HIDDEN, torch.tensor([[1, 3], [2, 2]])),
                               torch.tensor([[1.0, 3.0], [1.0, 1.0]]))


def test_dot_product_score_items_matches_forward_gather():
    torch.manual_seed(0)
    dec = DotProduct(IdEmbedding(50, 8))
    hidden = torch.randn(6, 8)
    full = dec(hidden)
    assert full.shape == (6, 51)
    assert torch.isneginf(full[:, 0]).all() and torch.isfinite(full[:, 1:]).all()
    items = torch.randint(1, 51, (6, 9))
    torch.testing.assert_close(dec.score_items(hidden, items), full.gather(1, items))
    # loop reference for the full score matrix
    w = dec.item_embedder.table.weight.detach()
    ref = torch.tensor([[float(hidden[m] @ w[i]) for i in range(1, 51)] for m in range(6)])
    torch.testing.assert_close(full[:, 1:], ref)


def test_cross_entropy_hand_value(tiny_decoder):
    loss = CrossEntropy()(HIDDEN, TARGETS, tiny_decoder)
    # sample 1: -log softmax([1, 2, 3])[item 1] = log(e + e^2 + e^3) - 1
    # sample 2: -log softmax([0, 1, 1])[item 2] = log(1 + e + e) - 1   (padding column is -inf: weight 0)
    e = math.e
    expected = ((math.log(e + e**2 + e**3) - 1) + (math.log(1 + 2 * e) - 1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # and equals torch's cross entropy over the decoder's scores
    torch.testing.assert_close(loss, F.cross_entropy(tiny_decoder(HIDDEN), TARGETS))


def test_cross_entropy_label_smoothing_ignores_padding(tiny_decoder):
    eps = 0.1
    loss = CrossEntropy(label_smoothing=eps)(HIDDEN, TARGETS, tiny_decoder)
    # over items 1..3 only: (1 - eps) * (-log p_t) + eps * mean_j(-log p_j), with -log p_j = logZ - s_j
    expected = 0.0
    for scores, t in (([1.0, 2.0, 3.0], 0), ([0.0, 1.0, 1.0], 1)):
        log_z = math.log(sum(math.exp(s) for s in scores))
        nll = [log_z - s for s in scores]
        expected += ((1 - eps) * nll[t] + eps * sum(nll) / 3) / 2
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_bce_hand_value(tiny_decoder, monkeypatch):
    loss_fn = SampledBCE(UniformNegatives(2))
    fixed = FixedNegatives(NEGATIVES)
    monkeypatch.setattr(loss_fn, "sampler", fixed)
    loss = loss_fn(HIDDEN, TARGETS, tiny_decoder)
    # positives: softplus(-1) for both; negatives: mean(softplus(2), softplus(3)) and mean(softplus(0), softplus(1))
    expected = (softplus(-1) + softplus(-1)) / 2 + ((softplus(2) + softplus(3)) / 2 + (softplus(0) + softplus(1)) / 2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert fixed.calls == [([1, 2], 3)]  # the sampler is asked for negatives over items 1..3


def test_bpr_hand_value(tiny_decoder, monkeypatch):
    loss_fn = BPR(UniformNegatives(2))
    monkeypatch.setattr(loss_fn, "sampler", FixedNegatives(NEGATIVES))
    loss = loss_fn(HIDDEN, TARGETS, tiny_decoder)
    # pos - neg: sample 1: 1 - 2 = -1, 1 - 3 = -2; sample 2: 1 - 0 = 1, 1 - 1 = 0
    # -log sigmoid(d) = softplus(-d) -> mean(softplus(1), softplus(2), softplus(-1), softplus(0))
    expected = (softplus(1) + softplus(2) + softplus(-1) + softplus(0)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_losses_backpropagate_to_embeddings(tiny_decoder, monkeypatch):
    loss_fn = BPR(UniformNegatives(2))
    monkeypatch.setattr(loss_fn, "sampler", FixedNegatives(NEGATIVES))
    loss_fn(HIDDEN, TARGETS, tiny_decoder).backward()
    grad = tiny_decoder.item_embedder.table.weight.grad
    # rows used: 1, 2, 3 get gradient; padding row 0 and the [MASK] row 4 get none
    assert grad[0].abs().sum() == 0 and grad[4].abs().sum() == 0
    assert (grad[1:4].abs().sum(dim=1) > 0).all()


# ------------------------------------------------------------------------- IdEmbedding


def test_id_embedding_init_and_layout():
    torch.manual_seed(0)
    emb = IdEmbedding(num_items=5000, hidden_size=32)
    w = emb.table.weight
    assert w.shape == (5002, 32)  # padding + 5000 items + [MASK]
    assert emb.mask_token == 5001
    assert (w[0] == 0).all()
    # normal(0, 0.02) over 5001 * 32 values: std error ~ 0.02 / sqrt(2 * 160032) ~ 3.5e-5
    assert abs(w[1:].std().item() - 0.02) < 5e-4
    assert abs(w[1:].mean().item()) < 5e-4
    assert emb.output_weights().shape == (5001, 32)
    torch.testing.assert_close(emb.output_weights(), w[:5001])
    torch.testing.assert_close(emb(torch.tensor([[0, 7]])), torch.stack([w[0], w[7]])[None])


def test_id_embedding_padding_row_gets_no_gradient():
    emb = IdEmbedding(10, 4)
    emb(torch.tensor([0, 0, 3])).sum().backward()
    assert (emb.table.weight.grad[0] == 0).all()
    assert (emb.table.weight.grad[3] == 1).all()  # row 3 used once: d(sum)/d(component) = 1


# ------------------------------------------------------------------------- encoders


def make_sasrec(max_len: int = 6) -> SASRec:
    torch.manual_seed(0)
    return SASRec(IdEmbedding(20, 16), max_len=max_len, num_layers=2, num_heads=2, dropout=0.3).eval()


def test_sasrec_is_causal():
    enc = make_sasrec()
    items = torch.tensor([[0, 0, 3, 5, 7, 9], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        base = enc(items)
        later = items.clone()
        later[:, -1] = torch.tensor([11, 12])  # change the last item only
        changed_last = enc(later)
        middle = items.clone()
        middle[:, 3] = torch.tensor([13, 14])  # change position 3
        changed_mid = enc(middle)
    assert base.shape == (2, 6, 16)
    # earlier positions are unaffected by a change later in the sequence
    torch.testing.assert_close(changed_last[:, :5], base[:, :5])
    torch.testing.assert_close(changed_mid[:, :3], base[:, :3])
    # the changed positions (and, for position 3, everything after it) do change
    assert not torch.allclose(changed_last[:, 5], base[:, 5])
    for t in (3, 4, 5):
        assert not torch.allclose(changed_mid[:, t], base[:, t])


def test_sasrec_trimmed_padding_gives_the_same_states():
    # positions are right-aligned to max_len, so dropping all-padding leading columns changes nothing
    enc = make_sasrec(max_len=6)
    items = torch.tensor([[0, 0, 0, 3, 5, 7], [0, 0, 1, 2, 3, 4]])
    with torch.no_grad():
        full = enc(items)
        trimmed = enc(items[:, 2:])
    torch.testing.assert_close(trimmed, full[:, 2:])


@pytest.mark.parametrize("model", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_transformer_final_state_is_the_last_position_of_forward(model, num_layers, activation):
    # evaluation computes the last layer for the last query only; it must equal the full forward's last row
    torch.manual_seed(0)
    cls = SASRec if model == "sasrec" else BERT4Rec
    enc = cls(IdEmbedding(20, 16), max_len=6, num_layers=num_layers, num_heads=2, dropout=0.3,
              activation=activation).eval()
    items = torch.tensor([[0, 0, 3, 5, 7, 9], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 8]])  # (3, 6)
    with torch.no_grad():
        full = enc(items)[:, -1]  # (3, 16)
        last = enc.final_state(items)  # (3, 16)
        trimmed = enc.final_state(items[1:2])  # one full row: no padding at all
    assert last.shape == (3, 16)
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trimmed[0], full[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(last[0], last[1])  # different histories, different states


def test_default_training_pairs_shift_and_mask_padding():
    enc = make_sasrec()
    inputs, targets = enc.training_pairs(torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]]))
    # inputs: the first L items; targets: the next item, 0 where the input is padding
    assert inputs.tolist() == [[0, 0, 1], [3, 4, 5]]
    assert targets.tolist() == [[0, 0, 2], [4, 5, 6]]
    recent = torch.tensor([[0, 1, 2]])
    assert enc.inference_input(recent).tolist() == [[0, 1, 2]]


def make_bert(max_len: int = 5, mask_prob: float = 0.3, last_mask_prob: float = 0.1) -> BERT4Rec:
    torch.manual_seed(0)
    return BERT4Rec(IdEmbedding(20, 16), max_len=max_len, num_layers=1, num_heads=2, dropout=0.1,
                    mask_prob=mask_prob, last_mask_prob=last_mask_prob).eval()


@pytest.mark.parametrize("mask_prob,last_mask_prob", [(0.3, 0.1), (0.01, 0.0), (0.9, 0.5)])
def test_bert4rec_training_pairs(mask_prob, last_mask_prob):
    enc = make_bert(mask_prob=mask_prob, last_mask_prob=last_mask_prob)
    mask = enc.item_embedder.mask_token
    assert mask == 21
    rows = torch.tensor([[0, 0, 0, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 7, 8], [0, 9, 10, 11, 12, 13]])
    window = rows.repeat(300, 1)  # (1200, 6)
    torch.manual_seed(123)
    inputs, targets = enc.training_pairs(window)
    seq = window[:, 1:]  # the window's first item is never an input or target of the cloze task
    masked = inputs == mask
    assert inputs.shape == targets.shape == (1200, 5)
    assert not (masked & (seq == 0)).any()  # only real items are masked
    assert masked.any(dim=1).all()  # at least one target per row
    assert torch.equal(targets, torch.where(masked, seq, 0))  # targets only where masked
    assert torch.equal(inputs, torch.where(masked, mask, seq))  # everything else unchanged, padding stays 0
    # the masking rate over real, non-last positions is about mask_prob
    body = (seq[:, :-1] > 0)
    rate = masked[:, :-1][body].float().mean().item()
    assert abs(rate - mask_prob) < 0.05


def test_bert4rec_inference_input_appends_mask():
    enc = make_bert(max_len=4)
    m = enc.item_embedder.mask_token  # 21
    # fewer than max_len columns: [MASK] is appended
    assert enc.inference_input(torch.tensor([[1, 2], [0, 3]])).tolist() == [[1, 2, m], [0, 3, m]]
    # already max_len columns: the oldest is dropped to make room
    assert enc.inference_input(torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])).tolist() == [[1, 2, 3, m], [5, 6, 7, m]]


def test_bert4rec_trimmed_padding_gives_the_same_states():
    enc = make_bert(max_len=5)
    items = torch.tensor([[0, 0, 3, 5, 21], [0, 1, 2, 3, 21]])
    with torch.no_grad():
        full = enc(items)
        trimmed = enc(items[:, 1:])
    assert full.shape == (2, 5, 16)
    torch.testing.assert_close(trimmed, full[:, 1:])


def test_gru4rec_shape_and_left_padding_invariance():
    torch.manual_seed(0)
    enc = GRU4Rec(IdEmbedding(20, 16), gru_size=24, num_layers=2, dropout=0.2).eval()
    items = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5], [0, 0, 0, 0, 9]])
    with torch.no_grad():
        out = enc(items)
        trimmed = enc(items[0:1, 2:])  # row 0 without its padding
    assert out.shape == (3, 5, 16)  # projected back from gru_size 24 to the embedding size 16
    # zero padding embeddings keep the bias-free GRU state at zero, so padding changes no real position
    torch.testing.assert_close(trimmed[0], out[0, 2:])


# ------------------------------------------------------------------------- encoders on windows as the data module serves them


def test_causal_training_pairs_unchanged_by_window_trimming():
    from recforge.data.datamodule import TrainWindows

    windows = torch.tensor([[0, 0, 0, 4, 5, 6], [0, 0, 0, 0, 7, 8]])  # L + 1 = 6, both left-padded
    served = TrainWindows(windows).__getitems__([0, 1])["items"]  # may drop all-padding leading columns
    enc = make_sasrec(max_len=5)

    def transitions(batch):
        inputs, targets = enc.training_pairs(batch)
        return sorted((int(i), int(t)) for i, t in zip(inputs[targets > 0], targets[targets > 0]))

    # hand: 4 -> 5, 5 -> 6, 7 -> 8
    assert transitions(windows) == transitions(served) == [(4, 5), (5, 6), (7, 8)]


def test_bert4rec_cloze_targets_unchanged_by_window_trimming():
    # A left-padded window's first real item is the user's first training item; nothing earlier shares it, so
    # the cloze task must be able to mask it (as it does on the full-width window, whose dropped column 0 is
    # padding). Served batches must allow the same targets: items 4, 5, 6, 7, 8.
    from recforge.data.datamodule import TrainWindows

    windows = torch.tensor([[0, 0, 0, 4, 5, 6], [0, 0, 0, 0, 7, 8]])
    served = TrainWindows(windows).__getitems__([0, 1])["items"]
    enc = make_bert(max_len=5, mask_prob=0.9)
    torch.manual_seed(0)
    # with mask_prob 0.9 and 200 copies, every maskable item is masked at least once (miss chance 0.1^200)
    _, full_targets = enc.training_pairs(windows.repeat(200, 1))
    _, served_targets = enc.training_pairs(served.repeat(200, 1))
    assert set(full_targets[full_targets > 0].tolist()) == {4, 5, 6, 7, 8}
    assert set(served_targets[served_targets > 0].tolist()) == {4, 5, 6, 7, 8}

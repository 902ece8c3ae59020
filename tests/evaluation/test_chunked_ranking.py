"""Chunked full ranking and chunked top-k: the same ranks and the same top k as over all items at once.

Levels: the pure functions over slices of one score matrix (exact by construction, ties, NaN and history across
chunks included); decoders scoring a column range; the module's evaluation step; a trained model's metrics with
``evaluation.item_chunk_size=null`` and ``=7``.
"""
from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import Tensor

from recforge.data.datamodule import TrainingData
from recforge.errors import TrainingDiverged
from recforge.evaluation.ranking import (
    chunked_target_ranks,
    mask_chunk,
    rank_targets,
    topk_chunked,
)
from recforge.models.decoders import DotProduct, score_columns
from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.popularity import ConstantEncoder, PopularityScores
from recforge.models.encoders.sasrec import SASRec
from recforge.models.losses import CrossEntropy
from recforge.models.module import NextItemModule
from recforge.run.build import build, build_trainer
from recforge.run.validate import config_problems

NEG_INF, NAN = float("-inf"), float("nan")
TINY_DATA = [
    "dataset.reader.num_users=121", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
    "dataset.max_len=10", "dataset.batch_size=32", "dataset.eval_batch_size=16", "hidden_size=16",
]


def slices(scores: Tensor):
    """A score_columns function over one precomputed matrix; records the widths it was asked for."""
    widths: list[int] = []

    def columns(start: int, end: int) -> Tensor:
        widths.append(end - start)
        return scores[:, start:end]

    columns.widths = widths  # type: ignore[attr-defined]
    return columns


def chunked(scores: Tensor, targets: Tensor, history: Tensor | None, chunk: int, fill: float = NEG_INF) -> Tensor:
    target_scores = scores.gather(1, targets.unsqueeze(1))[:, 0]  # (B,)
    return chunked_target_ranks(slices(scores), target_scores, targets, history, scores.shape[1], chunk, fill)


# ------------------------------------------------------------------------------------------- hand cases


def test_mask_chunk_hand_case():
    # ids 0..5 scored [9, 1, 2, 3, 4, 5]; history {2, 4} (+ padding), target 4 (in its own history)
    scores = torch.tensor([[9.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    history, targets, target = torch.tensor([[2, 4, 0]]), torch.tensor([4]), torch.tensor([[4.0]])
    first = mask_chunk(scores[:, 0:3], 0, history, targets, target)  # ids 0, 1, 2
    second = mask_chunk(scores[:, 3:6], 3, history, targets, target)  # ids 3, 4, 5
    assert first.tolist() == [[NEG_INF, 1.0, NEG_INF]]  # padding and history id 2 masked
    assert second.tolist() == [[3.0, 4.0, 5.0]]  # the target column gets ``target``, the masked score passed in
    # the target column as chunked_target_ranks passes it for a repeated target: the fill (-inf or S3-Rec's 0)
    assert mask_chunk(scores[:, 3:6], 3, history, targets, torch.tensor([[0.0]]), 0.0).tolist() == [[3.0, 0.0, 5.0]]
    assert mask_chunk(scores[:, 0:3], 0, history, targets, torch.tensor([[0.0]]), 0.0).tolist() == [[NEG_INF, 1.0, 0.0]]
    assert scores.tolist() == [[9.0, 1.0, 2.0, 3.0, 4.0, 5.0]]  # the input is not modified


def test_chunked_ranks_hand_case_ties_across_chunks_count_against_the_target():
    # ids 0..6 scored [9, 2, 5, 2, 2, 1, 2]; target 3 (score 2); ids 1, 4 and 6 tie with it, 2 is above
    scores = torch.tensor([[9.0, 2.0, 5.0, 2.0, 2.0, 1.0, 2.0]])
    targets = torch.tensor([3])
    for chunk in (1, 2, 3, 7, 10):
        assert chunked(scores, targets, None, chunk).tolist() == [5], chunk  # 5 = itself + 2, 1, 4, 6
        # history {2, 6} in different chunks: only ids 1 and 4 remain ahead or tied
        assert chunked(scores, targets, torch.tensor([[2, 6]]), chunk).tolist() == [3], chunk


def test_chunked_ranks_nan_target_ranks_last_and_all_equal_scores_rank_last():
    scores = torch.tensor([[0.0, NAN, 1.0, 2.0, 3.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
    targets = torch.tensor([1, 2])
    for chunk in (1, 2, 5):
        # NaN target: every column counts (rank = number of columns); all equal: the target is last of 4 items
        assert chunked(scores, targets, None, chunk).tolist() == [5, 4]


def test_chunk_sizes_cover_every_column_once():
    scores = torch.zeros(2, 11)
    for chunk, widths in ((1, [1] * 11), (4, [4, 4, 3]), (11, [11]), (16, [11])):
        columns = slices(scores)
        chunked_target_ranks(columns, torch.zeros(2), torch.tensor([1, 2]), None, 11, chunk)
        assert columns.widths == widths


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_size=0"):
        chunked(torch.zeros(1, 3), torch.tensor([1]), None, 0)


# ------------------------------------------------------------------------------------------- random parity


def random_case(seed: int, B: int = 48, N: int = 29, P: int = 14) -> tuple[Tensor, Tensor, Tensor]:
    """Scores with many exact ties (small integers), -inf entries, NaN entries and whole NaN rows; histories
    right-padded with 0 that repeat ids, span every chunk, and sometimes hold the target."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-3, 4, (B, N + 1), generator=g).float() / 2  # (B, N+1)
    scores[torch.rand(B, N + 1, generator=g) < 0.05] = NEG_INF
    scores[torch.rand(B, N + 1, generator=g) < 0.05] = NAN
    scores[::11] = NAN  # diverged rows: NaN everywhere, the target included
    targets = torch.randint(1, N + 1, (B,), generator=g)  # (B,)
    history = torch.randint(0, N + 1, (B, P), generator=g)  # (B, P)
    history[:, -3:] = 0  # right padding
    history[::3, 0] = targets[::3]  # the target in its own history
    history[::5, 1:4] = torch.tensor([1, N // 2, N])  # ids in the first, a middle and the last chunk
    return scores, targets, history


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [1, 7, 29, 30, 35])  # N = 29 items + padding = 30 columns
def test_chunked_ranks_equal_full_ranks_exactly(seed, chunk):
    scores, targets, history = random_case(seed)
    full = rank_targets(scores, targets, history)
    assert torch.equal(chunked(scores, targets, history, chunk), full)
    s3rec = rank_targets(scores, targets, history, 0.0)  # the S3-Rec rule: seen items at 0
    assert torch.equal(chunked(scores, targets, history, chunk, 0.0), s3rec)
    assert torch.equal(chunked(scores, targets, None, chunk), rank_targets(scores, targets, None))
    assert (full[::11] == scores.shape[1]).all()  # the NaN rows rank last


def test_target_score_rounded_to_the_chunk_dtype_keeps_ties_against_it():
    # bf16 chunks (a mixed-precision matmul) with a float32 target score computed once: an item whose bf16
    # score equals the rounded target score still counts against the target, as with full bf16 scores
    exact = torch.tensor([[0.0, 1.0, 1.001, 1.002, 0.5]])  # 1.001 and 1.002 both round to 1.0 in bf16
    low = exact.bfloat16()
    targets = torch.tensor([2])
    full = rank_targets(low.float(), targets, None)
    assert full.tolist() == [3]  # items 1, 2, 3 all at 1.0 in bf16
    target_fp32 = exact.gather(1, targets.unsqueeze(1))[:, 0]
    ranks = chunked_target_ranks(slices(low), target_fp32, targets, None, 5, 2)
    assert torch.equal(ranks, full)


# ------------------------------------------------------------------------------------------- decoders


def integer_dot_decoder(num_items: int, hidden_size: int, seed: int) -> DotProduct:
    """Small-integer embeddings: every dot product is exact in float32 in any summation order (exact ties)."""
    g = torch.Generator().manual_seed(seed)
    emb = IdEmbedding(num_items, hidden_size)
    with torch.no_grad():
        emb.table.weight.copy_(torch.randint(-2, 3, emb.table.weight.shape, generator=g).float())
        emb.table.weight[3] = emb.table.weight[5]  # duplicate rows: exact ties between items 3 and 5
    return DotProduct(emb)


@pytest.mark.parametrize("start,end", [(0, 1), (0, 7), (5, 12), (40, 41), (0, 41)])
def test_score_columns_equal_forward_columns(start, end):
    dot = integer_dot_decoder(40, 6, seed=0)
    hidden = torch.randint(-2, 3, (9, 6), generator=torch.Generator().manual_seed(1)).float()
    assert torch.equal(score_columns(dot, hidden, start, end), dot(hidden)[:, start:end])

    popularity = PopularityScores(IdEmbedding(40, 1))  # no score_range: scored through score_items
    popularity.fit_data(TrainingData.from_counts(torch.arange(41.0) % 7))
    ones = torch.ones(9, 1)
    assert torch.equal(score_columns(popularity, ones, start, end), popularity(ones)[:, start:end])
    assert popularity.counts[0] == 0.0  # column 0 set to -inf on a copy, never in the decoder's state


def test_dot_product_score_range_close_to_forward_for_float_weights():
    dot = DotProduct(IdEmbedding(300, 32))
    hidden = torch.randn(17, 32, generator=torch.Generator().manual_seed(0))
    full = dot(hidden).detach()
    for start, end in ((1, 8), (100, 301), (0, 301)):
        got = score_columns(dot, hidden, start, end).detach()
        torch.testing.assert_close(got[:, 1:] if start == 0 else got, full[:, max(start, 1):end])


def module_with(decoder: torch.nn.Module, encoder: torch.nn.Module, chunk: int | None) -> NextItemModule:
    return NextItemModule(encoder=encoder, decoder=decoder, loss=CrossEntropy(),
                          optimizer=partial(torch.optim.Adam, lr=1e-3), item_chunk_size=chunk).eval()


def eval_batch(num_items: int, B: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    recent = torch.randint(1, num_items + 1, (B, 6), generator=g)  # (B, 6)
    recent[::4, :3] = 0  # left padding
    history = torch.cat([recent, torch.randint(0, num_items + 1, (B, 5), generator=g)], dim=1)  # (B, 11)
    return {"input": recent, "target": torch.randint(1, num_items + 1, (B,), generator=g), "history": history,
            "index": torch.arange(B)}


@pytest.mark.parametrize("chunk", [1, 7, 40, 41, 46])
def test_module_chunked_ranks_equal_full_ranks_with_exact_ties(chunk, monkeypatch):
    """DotProduct with small-integer hidden states and embeddings: scores exact, so ties are real ties."""
    decoder = integer_dot_decoder(40, 6, seed=2)
    batch = eval_batch(40, 33, seed=3)
    hidden = torch.randint(-1, 2, (33, 6), generator=torch.Generator().manual_seed(4)).float()
    hidden[::5] = 0.0  # every item scores 0: the target ranks last among unmasked items
    ranks = {}
    for size in (None, chunk):
        module = module_with(decoder, SASRec(decoder.item_embedder, max_len=6, num_layers=1), size)
        monkeypatch.setattr(module, "hidden_state", lambda recent, users=None: hidden)
        ranks[size] = module.rank(batch)
    assert torch.equal(ranks[chunk], ranks[None])
    # every unmasked item ties with the target; a target in its own history is masked: last of 41 columns
    unmasked = [41 if int(batch["target"][i]) in batch["history"][i].tolist()
                else len(set(range(1, 41)) - set(batch["history"][i].tolist())) for i in range(0, 33, 5)]
    assert ranks[None][::5].tolist() == unmasked


@pytest.mark.parametrize("chunk", [1, 7, 60, 61, 65])
def test_module_chunked_ranks_equal_full_ranks_for_a_random_sasrec(chunk):
    torch.manual_seed(0)
    embedder = IdEmbedding(60, 16)
    encoder = SASRec(embedder, max_len=6, num_layers=1)
    decoder = DotProduct(embedder)
    batch = eval_batch(60, 40, seed=5)
    with torch.no_grad():
        full = module_with(decoder, encoder, None).rank(batch)
        got = module_with(decoder, encoder, chunk).rank(batch)
    assert torch.equal(got, full)


def test_module_popularity_chunked_ranks_equal_full_ranks():
    decoder = PopularityScores(IdEmbedding(30, 1))
    decoder.fit_data(TrainingData.from_counts((torch.arange(31.0) * 7) % 5))  # counts 0..4: many ties
    encoder = ConstantEncoder(IdEmbedding(30, 1))
    batch = eval_batch(30, 25, seed=6)
    full = module_with(decoder, encoder, None).rank(batch)
    for chunk in (1, 7, 31, 40):
        assert torch.equal(module_with(decoder, encoder, chunk).rank(batch), full)


def test_module_chunked_nan_scores_stop_the_run(monkeypatch):
    decoder = integer_dot_decoder(20, 4, seed=0)
    module = module_with(decoder, SASRec(decoder.item_embedder, max_len=6, num_layers=1), 7)
    hidden = torch.ones(5, 4)
    hidden[2, 1] = NAN
    monkeypatch.setattr(module, "hidden_state", lambda recent, users=None: hidden)
    with pytest.raises(TrainingDiverged, match="NaN"):
        module.rank(eval_batch(20, 5, seed=0))


# ------------------------------------------------------------------------------------------- top-k


@pytest.mark.parametrize("chunk", [1, 7, 50, 51, 56])
@pytest.mark.parametrize("k", [1, 5, 51])
def test_topk_chunked_equals_torch_topk_without_ties(chunk, k):
    scores = torch.randn(12, 51, generator=torch.Generator().manual_seed(k))  # continuous: no ties
    values, ids = topk_chunked(slices(scores), 51, k, chunk)
    expected = torch.topk(scores, k, dim=1)
    assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices)


@pytest.mark.parametrize("chunk", [1, 3, 7, 20, 25])
@pytest.mark.parametrize("k", [1, 4, 10, 20])
def test_topk_chunked_ties_lower_id_first_and_nan_on_top(chunk, k):
    g = torch.Generator().manual_seed(chunk * 100 + k)
    scores = torch.randint(0, 4, (9, 20), generator=g).float()  # (9, 20) many ties
    scores[2, [3, 17]] = NAN
    scores[4] = 1.0  # all tied: ids 0..k-1
    scores[5, 0] = NEG_INF
    values, ids = topk_chunked(slices(scores), 20, k, chunk)
    reference = torch.sort(scores, dim=1, descending=True, stable=True)
    assert torch.equal(ids, reference.indices[:, :k])
    assert torch.equal(values.isnan(), reference.values[:, :k].isnan())
    torch.testing.assert_close(values, torch.topk(scores, k, dim=1).values, equal_nan=True, rtol=0, atol=0)
    assert ids[4].tolist() == list(range(k))
    assert ids[2, :2].tolist() == [3, 17][:k]  # NaN first, as torch.topk


def test_topk_chunked_hand_case_and_errors():
    scores = torch.tensor([[0.5, 2.0, 1.0, 2.0, 3.0]])
    values, ids = topk_chunked(slices(scores), 5, 3, 2)
    assert values.tolist() == [[3.0, 2.0, 2.0]] and ids.tolist() == [[4, 1, 3]]
    assert topk_chunked(slices(scores), 5, 0, 2)[1].shape == (1, 0)
    with pytest.raises(ValueError, match="k=6"):
        topk_chunked(slices(scores), 5, 6, 2)
    with pytest.raises(ValueError, match="chunk_size=0"):
        topk_chunked(slices(scores), 5, 2, 0)


# ------------------------------------------------------------------------------------------- config + end to end


@pytest.mark.parametrize("value,problem", [
    ("null", None), ("1", None), ("65536", None),
    ("0", "evaluation.item_chunk_size=0 must be an integer >= 1 (or null)"),
    ("2.5", "evaluation.item_chunk_size=2.5 must be an integer >= 1 (or null), not a float"),
])
def test_item_chunk_size_is_validated(value, problem, compose_train):
    found = config_problems(compose_train(f"evaluation.item_chunk_size={value}"))
    assert found == ([problem] if problem else [])


@pytest.mark.parametrize("encoder", ["sasrec", "popularity"])
def test_trained_model_metrics_identical_with_and_without_item_chunks(encoder, compose_train):
    """The same weights tested with evaluation.item_chunk_size=null and =7: identical val and test metrics."""
    base = ["trainer.max_epochs=2", "callbacks=none", "logger=none", f"encoder={encoder}", *TINY_DATA]
    L.seed_everything(0)
    datamodule, trained = build(compose_train(*base))
    if trained.trainable:
        build_trainer(compose_train(*base)).fit(trained, datamodule=datamodule)
    else:  # popularity: the training counts are its state
        trained.decoder.fit_data(datamodule.training_data)
    results = {}
    for size in ("null", "7"):
        cfg = compose_train(*base, f"evaluation.item_chunk_size={size}")
        datamodule, module = build(cfg)
        module.load_state_dict(trained.state_dict())
        assert module.item_chunk_size == (None if size == "null" else 7)
        trainer = build_trainer(cfg)
        trainer.test(module, dataloaders=datamodule.val_dataloader(), verbose=False)
        val = module.test_metrics
        trainer.test(module, dataloaders=datamodule.test_dataloader(), verbose=False)
        results[size] = (val, module.test_metrics, module.evaluated_samples["test"])
    assert results["7"] == results["null"]
    assert results["null"][2] == 121
    assert 0 < results["null"][1]["ndcg@10"] < 1

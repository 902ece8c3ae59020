"""Explanations: IG (Captum) on hand-checked linear models and its completeness on a transformer; the last layer's
attention against a by-hand computation; ranking; which encoders each method accepts."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from torch import Tensor

from recforge.deploy.explain import (
    explain_problem,
    history_slots,
    integrated_gradients,
    last_layer_attention,
    ranked,
)
from recforge.deploy.model import Scorer, load_model
from recforge.deploy.recommend import main as recommend_main
from recforge.deploy.serve import create_app
from recforge.errors import RecforgeError
from recforge.models.decoders import DotProduct
from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.base import SequenceEncoder
from recforge.models.encoders.bert4rec import BERT4Rec
from recforge.models.encoders.gru4rec import GRU4Rec
from recforge.models.encoders.sasrec import SASRec


class SumEncoder(SequenceEncoder):
    """state at t = (sum of the input embeddings up to t) ** power: power 1 makes every score linear in them."""

    def __init__(self, item_embedder: IdEmbedding, power: int = 1) -> None:
        super().__init__()
        self.item_embedder, self.power = item_embedder, power

    def forward(self, items: Tensor) -> Tensor:
        return self.item_embedder(items).cumsum(1) ** self.power  # (B, T, H)


def hand_model(power: int = 1) -> Scorer:
    """4 items in 2 dimensions: e1 = (1, 0), e2 = (0, 2), e3 = (1, 1), e4 = (-1, 3)."""
    embedder = IdEmbedding(num_items=4, hidden_size=2)
    with torch.no_grad():
        embedder.table.weight.copy_(torch.tensor([[0., 0.], [1., 0.], [0., 2.], [1., 1.], [-1., 3.], [0., 0.]]))
    return Scorer(SumEncoder(embedder, power), DotProduct(embedder)).eval()


def test_ig_of_a_linear_score_is_each_items_term_exactly() -> None:
    # score(t) = sum_h <e_h, e_t>: history [0, 1, 2] (left padding), targets 3 and 4
    # t=3: <e1,e3> = 1, <e2,e3> = 2;   t=4: <e1,e4> = -1, <e2,e4> = 6
    attributions = integrated_gradients(hand_model(), torch.tensor([[0, 1, 2]]), torch.tensor([[3, 4]]), steps=8)
    torch.testing.assert_close(attributions, torch.tensor([[[0., 1., 2.], [0., -1., 6.]]]))
    assert ranked(attributions[0, 1], torch.tensor([False, True, True])) == [(1, 6.0), (2, -1.0)]


def test_ig_of_a_quadratic_score_by_hand() -> None:
    # final state s**2 (elementwise), s = e1 + e3 = (2, 1); score of item 2 = <s**2, e2> = 2 * (x1 + x3)**2 on
    # dimension 2 only, where x1 = 0 and x3 = 1. On the path a * x: d/dx3 = 4a, so IG(x3) = 1 * int_0^1 4a da = 2
    # and IG(x1) = 0 * ... = 0: the whole score (2 = completeness) goes to item 3.
    scorer = hand_model(power=2)
    attributions = integrated_gradients(scorer, torch.tensor([[1, 3]]), torch.tensor([[2]]), steps=16)  # (1, 1, 2)
    torch.testing.assert_close(attributions, torch.tensor([[[0., 2.]]]))


def tiny_transformer(encoder_cls: type, seed: int = 0, **kwargs: object) -> Scorer:
    torch.manual_seed(seed)
    embedder = IdEmbedding(num_items=12, hidden_size=8, init_std=0.5)
    encoder = encoder_cls(embedder, max_len=6, num_layers=kwargs.pop("num_layers", 2), num_heads=2, dropout=0.0,
                          **kwargs)
    return Scorer(encoder, DotProduct(embedder)).eval()


def content_free_scores(scorer: Scorer, items: Tensor) -> Tensor:
    """Scores with every real item's input embedding at zero (the decoder keeps the trained table): IG's baseline,
    built without the explain code. (B, N+1)"""
    blank = copy.deepcopy(scorer.encoder)
    with torch.no_grad():
        blank.item_embedder.table.weight[: blank.item_embedder.num_items + 1] = 0.0
    return Scorer(blank, scorer.decoder).eval()(items)


@pytest.mark.parametrize("encoder_cls", [SASRec, BERT4Rec, GRU4Rec])
def test_ig_attributions_sum_to_the_score_minus_the_baseline_score(encoder_cls: type) -> None:
    if encoder_cls is GRU4Rec:
        torch.manual_seed(0)
        embedder = IdEmbedding(num_items=12, hidden_size=8, init_std=0.5)
        scorer = Scorer(GRU4Rec(embedder, gru_size=8, dropout=0.0), DotProduct(embedder)).eval()
    else:
        scorer = tiny_transformer(encoder_cls)
    items = torch.tensor([[0, 0, 3, 7, 7, 1], [5, 2, 9, 11, 4, 6]])  # (2, 6)
    targets = torch.tensor([[2, 10], [8, 12]])  # (2, 2)
    attributions = integrated_gradients(scorer, items, targets, steps=64)  # (2, 2, T)
    with torch.no_grad():
        gap = scorer(items).gather(1, targets) - content_free_scores(scorer, items).gather(1, targets)  # (2, 2)
    torch.testing.assert_close(attributions.sum(-1), gap, atol=5e-4, rtol=1e-3)
    slots = history_slots(scorer.encoder.inference_input(items), 12)  # (2, T)
    assert (attributions[~slots[:, None].expand_as(attributions)] == 0).all() and gap.abs().max() > 0.02


def reference_attention(scorer: Scorer, items: Tensor) -> Tensor:
    """By hand for a 1-layer pre-LN SASRec: softmax(q k^T / sqrt(d)) of the last query, allowed keys only, averaged
    over heads. (B, T)"""
    stack = scorer.encoder.stack
    layer = stack.layers.layers[0]
    x = layer.norm1(stack.norm_in(stack.item_embedder(items) + stack.positions.weight))  # (B, T, H)
    w, b = layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias
    q, k = (x @ w[:8].T + b[:8])[:, -1], x @ w[8:16].T + b[8:16]  # (B, H), (B, T, H)
    heads = []
    for h in range(2):
        part = slice(4 * h, 4 * h + 4)
        logits = (k[:, :, part] @ q[:, part, None])[..., 0] / math.sqrt(4)  # (B, T)
        heads.append(logits.masked_fill(items == 0, float("-inf")).softmax(-1))
    return (heads[0] + heads[1]) / 2


def test_attention_is_the_last_querys_softmax_over_real_keys() -> None:
    scorer = tiny_transformer(SASRec, num_layers=1)
    items = torch.tensor([[0, 0, 3, 7, 7, 1], [5, 2, 9, 11, 4, 6]])
    weights = last_layer_attention(scorer, items, torch.zeros(2, 3, dtype=torch.long))  # (2, 3, 6)
    with torch.no_grad():
        expected = reference_attention(scorer, items)  # (2, 6)
    torch.testing.assert_close(weights, expected[:, None].expand(-1, 3, -1))
    assert weights[0, 0, :2].sum() == 0 and torch.allclose(weights.sum(-1), torch.ones(2, 3))


def test_bert4rec_mask_slot_is_not_a_history_item() -> None:
    scorer = tiny_transformer(BERT4Rec)
    items = torch.tensor([[0, 0, 3, 7, 7, 1]])
    encoded = scorer.encoder.inference_input(items)  # (1, 6): [0, 3, 7, 7, 1, MASK]
    assert history_slots(encoded, 12).tolist() == [[False, True, True, True, True, False]]
    weights = last_layer_attention(scorer, items, torch.zeros(1, 1, dtype=torch.long))
    assert weights[0, 0, 0] == 0 and weights[0, 0].sum().item() == pytest.approx(1.0)


def test_attention_is_refused_for_gru4rec_and_ig_is_not() -> None:
    embedder = IdEmbedding(num_items=12, hidden_size=8)
    scorer = Scorer(GRU4Rec(embedder, gru_size=8), DotProduct(embedder)).eval()
    assert explain_problem(scorer, "ig") is None
    problem = explain_problem(scorer, "attention")
    assert problem is not None and "GRU4Rec" in problem and "(ig)" in problem
    with pytest.raises(RecforgeError, match="needs a transformer encoder"):
        last_layer_attention(scorer, torch.tensor([[1, 2]]), torch.tensor([[3]]))


def test_ranked_puts_the_largest_first_and_breaks_ties_toward_the_recent() -> None:
    values = torch.tensor([9.0, 0.5, -2.0, 3.0, 0.5])
    slots = torch.tensor([False, True, True, True, True])  # back 4..1 = columns 1..4
    assert ranked(values, slots) == [(2, 3.0), (1, 0.5), (4, 0.5), (3, -2.0)]


# ------------------------------------------------------------------ recforge-recommend --explain, POST /recommend


def recommend_records(run: Path, tmp_path: Path, lines: list[dict[str, Any]], *options: str) -> list[dict[str, Any]]:
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    recommend_main([str(run), "--input", str(source), "--output", str(sink), *options])
    return [json.loads(text) for text in sink.read_text().splitlines()]


def test_explain_lists_every_input_history_item_strongest_first_and_sums_to_the_score_gap(tiny_run, tmp_path) -> None:
    histories = [[5, 9, 2], [7, 999, 3, 7], list(range(1, 26))]  # 999 is unknown; the 3rd is longer than max_len 10
    records = recommend_records(tiny_run, tmp_path, [{"history": h} for h in histories], "--k", "4", "--explain",
                                "--ig-steps", "64")
    scorer = load_model(tiny_run, ids="file").scorer
    for history, record in zip(histories, records):
        assert len(record["explanations"]) == len(record["items"]) == 4
        for explanation in record["explanations"]:
            values = [entry["attribution"] for entry in explanation]
            assert values == sorted(values, reverse=True)
            assert all(history[entry["index"]] == entry["item"] for entry in explanation)
            inside = [i for i, item in enumerate(history) if item != 999][-10:]  # the model's input: last 10 known
            assert sorted(entry["index"] for entry in explanation) == inside
        items = torch.tensor([([0] * 10 + [i for i in history if i != 999])[-10:]])  # (1, 10)
        targets = torch.tensor([record["items"]])  # (1, 4)
        with torch.no_grad():
            gap = scorer(items).gather(1, targets) - content_free_scores(scorer, items).gather(1, targets)  # (1, 4)
        totals = [sum(entry["attribution"] for entry in explanation) for explanation in record["explanations"]]
        assert totals == pytest.approx(gap[0].tolist(), abs=2e-3)  # completeness on the trained SASRec


def test_explain_with_raw_ids_and_attention(tiny_run, tmp_path) -> None:
    raw = json.loads((tiny_run / "item_ids.json").read_text())["item_ids"]
    history = [raw[4], "nope", raw[17], raw[30]]
    [record] = recommend_records(tiny_run, tmp_path, [{"history": history}], "--raw-ids", "--k", "3", "--explain",
                                 "--explain-method", "attention")
    assert all(isinstance(item, str) for item in record["items"])
    first = record["explanations"][0]
    assert record["explanations"] == [first] * 3  # attention does not depend on the recommended item
    assert sorted((e["index"], e["item"]) for e in first) == [(0, raw[4]), (2, raw[17]), (3, raw[30])]
    assert sum(e["attribution"] for e in first) == pytest.approx(1.0, abs=1e-5)  # SASRec: every key is history
    [plain] = recommend_records(tiny_run, tmp_path, [{"history": history}], "--raw-ids", "--k", "3")
    assert "explanations" not in plain and plain["items"] == record["items"]


def test_attention_on_a_gru4rec_run_is_refused_in_one_line(tiny_run, tmp_path, capsys, monkeypatch) -> None:
    model = load_model(tiny_run, ids="file")
    embedder = IdEmbedding(num_items=model.num_items, hidden_size=16)
    model.scorer = Scorer(GRU4Rec(embedder, gru_size=8), DotProduct(embedder)).eval()
    monkeypatch.setattr("recforge.deploy.recommend.load_model", lambda *args, **kwargs: model)
    with pytest.raises(SystemExit) as exit_info:
        recommend_records(tiny_run, tmp_path, [{"history": [1]}], "--explain", "--explain-method", "attention")
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("recforge: error: --explain: the attention explanation needs a transformer encoder")


def test_http_explain_field_gives_the_same_explanations_as_the_command(tiny_run, tmp_path) -> None:
    raw = json.loads((tiny_run / "item_ids.json").read_text())["item_ids"]
    body = {"history": [raw[3], raw[8], raw[8], raw[21]], "k": 3, "raw_ids": True}
    [expected] = recommend_records(tiny_run, tmp_path, [{"history": body["history"]}], "--raw-ids", "--k", "3",
                                   "--explain")
    with TestClient(create_app(load_model(tiny_run, ids="file"))) as client:
        got = client.post("/recommend", json={**body, "explain": True}).json()
        plain = client.post("/recommend", json=body).json()
        bad = client.post("/recommend", json={**body, "explain": "yes"})
    assert got["items"] == expected["items"] and "explanations" not in plain
    assert [[(e["item"], e["index"]) for e in row] for row in got["explanations"]] == \
        [[(e["item"], e["index"]) for e in row] for row in expected["explanations"]]
    for row, expected_row in zip(got["explanations"], expected["explanations"]):
        assert [e["attribution"] for e in row] == pytest.approx([e["attribution"] for e in expected_row], abs=1e-5)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "explain"]


@pytest.mark.parametrize("name", ["model.pt", "model-int8.onnx"])
def test_explain_on_an_exported_file_is_refused_in_one_line(tmp_path, capsys, name) -> None:
    exported = tmp_path / "export" / name
    exported.parent.mkdir()
    exported.write_bytes(b"not read")
    with pytest.raises(SystemExit) as exit_info:
        recommend_main([str(exported), "--explain", "--input", str(exported)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err == (f"recforge: error: --explain needs the run's PyTorch model (its run directory or a .ckpt file), "
                   f"not the exported file {exported}; explanations take gradients through the eager model.")


def test_an_empty_or_unknown_history_gets_empty_explanations(tiny_run, tmp_path) -> None:
    records = recommend_records(tiny_run, tmp_path, [{"history": []}, {"history": [999]}], "--k", "2", "--explain")
    assert [r["explanations"] for r in records] == [[[], []], [[], []]]
    assert records[1]["unknown"] == [999] and all(len(r["items"]) == 2 for r in records)

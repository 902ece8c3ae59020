"""recforge-recommend: top-K from JSON lines equals the model's masked top-K; raw ids; bad lines; batching."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from recforge.deploy.recommend import main
from recforge.deploy.recommender import EMPTY_HISTORY


def recommend(run: Path, tmp_path: Path, lines: list[Any], *options: str) -> tuple[int, list[dict[str, Any]]]:
    """Run the command on ``lines`` (dicts are JSON-encoded, strings written as they are): (exit code, records)."""
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    code = 0
    try:
        main([str(run), "--input", str(source), "--output", str(sink), *options])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, [json.loads(text) for text in sink.read_text().splitlines()] if sink.exists() else []


def reference_top(module, history: list[int], k: int, mask: bool = True) -> tuple[list[int], list[float]]:
    """Top-k by NextItemModule.score on the last 10 items, with every history item masked (like evaluation)."""
    recent = history[-10:]
    items = torch.tensor([[0] * (10 - len(recent)) + recent])  # (1, L)
    with torch.no_grad():
        scores = module.score(items)[0]  # (N+1,)
    scores[0] = float("-inf")
    if mask:
        scores[history] = float("-inf")
    top = scores.topk(k)
    return top.indices.tolist(), top.values.tolist()


def test_answers_are_the_models_top_k_with_history_masked(tiny_run, tmp_path, lightning_module) -> None:
    histories = [[5, 9, 2], list(range(1, 26)), [7], [3, 3, 3, 8]]
    code, records = recommend(tiny_run, tmp_path, [{"user": f"u{i}", "history": h} for i, h in enumerate(histories)],
                              "--k", "5")
    assert code == 0 and [r["user"] for r in records] == ["u0", "u1", "u2", "u3"]
    for history, record in zip(histories, records):
        items, scores = reference_top(lightning_module, history, 5)
        assert record["items"] == items and record["unknown"] == [] and "warning" not in record
        assert not set(record["items"]) & set(history)
        assert record["scores"] == pytest.approx(scores, abs=1e-5)


def test_only_the_last_max_len_items_are_the_input(tiny_run, tmp_path, lightning_module) -> None:
    long = list(range(1, 31))
    _, records = recommend(tiny_run, tmp_path, [{"history": long}, {"history": long[-10:]}], "--keep-history")
    assert records[0]["items"] == records[1]["items"] == reference_top(lightning_module, long, 10, mask=False)[0]
    assert records[0]["user"] is None


def test_raw_ids_map_through_item_ids_json(tiny_run, tmp_path, lightning_module) -> None:
    raw = json.loads((tiny_run / "item_ids.json").read_text())["item_ids"]
    internal = [4, 17, 30]
    history = [raw[4], int(raw[17]), raw[30], "not-an-item"]  # a numeric raw id may come as a JSON number
    code, [record] = recommend(tiny_run, tmp_path, [{"user": "u", "history": history}], "--raw-ids", "--k", "4")
    items, scores = reference_top(lightning_module, internal, 4)
    assert code == 0 and record["items"] == [raw[i] for i in items]
    assert record["unknown"] == ["not-an-item"] and record["scores"] == pytest.approx(scores, abs=1e-5)


def test_empty_or_unknown_history_gets_the_empty_history_answer_and_says_so(tiny_run, tmp_path, lightning_module) -> None:
    code, records = recommend(tiny_run, tmp_path, [{"history": []}, {"history": [0, 60, -3, 999]}], "--k", "3")
    expected = reference_top(lightning_module, [], 3)[0]
    assert code == 0
    assert records[0] == {**records[0], "items": expected, "unknown": [], "warning": EMPTY_HISTORY}
    assert records[1]["items"] == expected and records[1]["unknown"] == [0, 60, -3, 999]
    assert records[1]["warning"] == EMPTY_HISTORY


def test_bad_lines_get_error_records_and_the_rest_are_answered(tiny_run, tmp_path, capsys) -> None:
    lines = [{"user": "a", "history": [1]}, "{not json", "[1, 2]", {"user": "b"}, {"user": "c", "history": "1 2"},
             "", {"user": "d", "history": [1, 2.5]}, {"user": "e", "history": [2]}]
    code, records = recommend(tiny_run, tmp_path, lines)
    assert code == 2 and len(records) == 7  # the blank line 6 is skipped
    assert [r.get("line") for r in records] == [None, 2, 3, 4, 5, 7, None]
    assert records[1]["error"].startswith("line 2 is not valid JSON")
    assert records[2]["error"] == 'line 3 is a JSON list, expected an object with a "history" list'
    assert records[3] == {"line": 4, "user": "b", "error": 'line 4: no "history" key, expected a list of item ids'}
    assert records[4]["error"] == 'line 5: "history" is a str, expected a list of item ids'
    assert records[5]["error"].startswith("line 7: history[1] = 2.5 is not an item id")
    assert records[0]["user"] == "a" and records[6]["user"] == "e" and len(records[6]["items"]) == 10
    err = capsys.readouterr().err.strip()
    assert err.startswith("recforge: error: 5 input line(s) failed, the first: line 2 is not valid JSON")


def test_results_do_not_depend_on_the_batch_size(tiny_run, tmp_path) -> None:
    lines = [{"user": i, "history": list(range(1 + i, 6 + 2 * i))} for i in range(7)]
    _, big = recommend(tiny_run, tmp_path, lines)
    _, small = recommend(tiny_run, tmp_path, lines, "--batch-size", "2")
    assert [r["items"] for r in big] == [r["items"] for r in small]
    for a, b in zip(big, small):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_raw_ids_without_an_id_map_is_a_user_error(tiny_run, tmp_path, capsys) -> None:
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("item_ids.json"))
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.dataset.reader = {"_target_": "recforge.data.readers.MovieLens100K", "path": "nowhere/ml-100k"}
    OmegaConf.save(cfg, run / "config.yaml")
    code, records = recommend(run, tmp_path, [{"history": ["1"]}], "--raw-ids")
    err = capsys.readouterr().err.strip()
    assert code == 2 and records == [] and "no item_ids.json" in err and "--data-root" in err
    code, [record] = recommend(run, tmp_path, [{"history": [1]}])  # internal ids need no map
    assert code == 0 and len(record["items"]) == 10

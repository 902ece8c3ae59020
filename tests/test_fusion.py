"""Late fusion: normalisations, fused ranks and the weight choice on hand-computed cases; recforge-fuse end to end
(fusing with w = 1 or w = 0 reproduces each run's own test metrics exactly)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recforge.fusion import Identity, MinMax, ZScore, choose_weight, fused_ranks

INF = float("-inf")


def test_zscore_standardises_each_row_over_the_real_items():
    scores = torch.tensor([[INF, 1.0, 2.0, 3.0], [INF, 5.0, 5.0, 5.0]])
    out = ZScore()(scores)
    s = math.sqrt(2 / 3)  # population std of 1, 2, 3
    torch.testing.assert_close(out[0, 1:], torch.tensor([-1 / s, 0.0, 1 / s], dtype=torch.float64))
    torch.testing.assert_close(out[1, 1:], torch.zeros(3, dtype=torch.float64))  # a constant row: all 0
    assert torch.isneginf(out[:, 0]).all() and out.dtype == torch.float64


def test_minmax_maps_each_row_to_zero_one():
    scores = torch.tensor([[INF, 1.0, 2.0, 5.0], [INF, -2.0, -2.0, -2.0]])
    out = MinMax()(scores)
    torch.testing.assert_close(out[0, 1:], torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out[1, 1:], torch.zeros(3, dtype=torch.float64))
    assert torch.isneginf(out[:, 0]).all()
    assert torch.equal(Identity()(scores), scores.double())


def test_fused_ranks_move_the_target_with_the_weight():
    # items 1..4; the target is item 2. Model a ranks it 1st, model b ranks it 4th.
    a = torch.tensor([[INF, 0.0, 3.0, 1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[INF, 3.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
    targets = torch.tensor([2])
    ranks = fused_ranks(a, b, [1.0, 0.0, 0.5, 0.8], targets, history=None)
    # w = 0.5: item 1 -> 1.5, item 2 -> 1.5 (tie counts against the target), item 3 -> 1.5, item 4 -> 1.5 -> 4
    # w = 0.8: item 1 -> 0.6, item 2 -> 2.4, item 3 -> 1.2, item 4 -> 1.8 -> 1st
    assert ranks.tolist() == [[1], [4], [4], [1]]
    # history masking: with item 1 and 3 seen before, model b's rank of the target improves from 4 to 2
    history = torch.tensor([[1, 3]])
    assert fused_ranks(a, b, [0.0], targets, history).tolist() == [[2]]


def test_choose_weight_takes_the_best_and_breaks_ties_towards_the_even_blend():
    metrics = {0.0: {"ndcg@10": 0.10}, 0.3: {"ndcg@10": 0.12}, 0.6: {"ndcg@10": 0.12}, 1.0: {"ndcg@10": 0.11}}
    assert choose_weight(metrics, "ndcg@10") == 0.6  # 0.3 and 0.6 tie; 0.6 is nearer 0.5
    assert choose_weight({0.2: {"hr@5": 0.3}, 0.8: {"hr@5": 0.3}}, "hr@5") == 0.2  # equally near: the smaller
    with pytest.raises(ValueError):
        choose_weight({}, "ndcg@10")


# ------------------------------------------------------------------------------------------- end to end

SCRIPTS = Path(sys.executable).parent
TINY = ["dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
        "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16", "callbacks.progress_bar=null", "logger=csv"]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_recforge_fuse_end_to_end_reproduces_each_run_alone_and_chooses_on_validation(tmp_path):
    runs = {"sasrec": tmp_path / "sasrec", "pop": tmp_path / "pop"}
    for encoder, run in runs.items():
        proc = _run([str(SCRIPTS / "recforge-train"), f"encoder={'popularity' if encoder == 'pop' else encoder}",
                     "trainer.max_epochs=2", *TINY, f"hydra.run.dir={run}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "fused"
    proc = _run([str(SCRIPTS / "recforge-fuse"), f"runs=[{runs['sasrec']},{runs['pop']}]", "weights=[0.0,0.5,1.0]",
                 "batch_size=7", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    alone = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs.items()}
    # w = 1 is SASRec alone and w = 0 popularity alone: exactly each run's own test metrics (z-scoring a row
    # keeps its order), and the same on validation for the tested checkpoint
    # (the ranking metrics: fusion keeps no top lists, so no coverage, gini, ...)
    for name, run in runs.items():
        fused_alone = result["test_alone"][str(run)]
        assert fused_alone == pytest.approx({k: alone[name]["test"][k] for k in fused_alone}, abs=1e-12)
        assert {"precision@10", "map@10", "ndcg@10"} <= set(fused_alone) and "coverage@10" not in fused_alone
    assert result["val"]["1.0"]["ndcg@10"] == pytest.approx(alone["sasrec"]["val"]["ndcg@10"], abs=1e-12)
    best = max(result["val"], key=lambda w: (result["val"][w]["ndcg@10"], -abs(float(w) - 0.5)))
    assert result["weight"] == float(best) and result["weight_chosen_on"] == "val/ndcg@10"
    assert result["samples"] == {"val": alone["sasrec"]["dataset"]["val_samples"],
                                 "test": alone["sasrec"]["dataset"]["test_samples"]}
    if result["weight"] == 1.0:
        assert result["test"] == result["test_alone"][str(runs["sasrec"])]

    # a given weight is used as is; runs on different data are refused in one sentence
    other = tmp_path / "other"
    smaller = [o.replace("num_users=120", "num_users=100") for o in TINY]
    proc = _run([str(SCRIPTS / "recforge-train"), "encoder=popularity", *smaller, f"hydra.run.dir={other}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run([str(SCRIPTS / "recforge-fuse"), f"runs=[{runs['sasrec']},{other}]", "weight=0.5",
                 f"hydra.run.dir={tmp_path / 'bad'}"], tmp_path)
    assert proc.returncode == 2 and "different data or splits" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run([str(SCRIPTS / "recforge-fuse"), f"runs=[{runs['sasrec']},{runs['pop']}]", "weight=1.5",
                 f"hydra.run.dir={tmp_path / 'bad2'}"], tmp_path)
    assert proc.returncode == 2 and "must be in [0, 1]" in proc.stderr

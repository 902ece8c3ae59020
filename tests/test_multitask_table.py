"""experiments/multitask_table.py: the multi-task results tables from run directories."""
from __future__ import annotations

import json
from pathlib import Path


def fake_run(root: Path, name: str, ndcg: float, auc: float, rmse: float, best_epoch: int = 4, epochs: int = 15,
             wall: str | None = "6:05.20", weights: list[tuple[float, float, float]] | None = None) -> None:
    run = root / name / "run"
    run.mkdir(parents=True)
    test = {"next_item/ndcg@10": ndcg, "next_item/hr@10": 2 * ndcg, "intent/auc": auc, "value/rmse": rmse}
    (run / "metrics.json").write_text(json.dumps({"test": test, "best_epoch": best_epoch, "epochs": epochs}))
    if wall is not None:
        (root / name / "time.txt").write_text(f"\tElapsed (wall clock) time (h:mm:ss or m:ss): {wall}\n")
    if weights is not None:
        logs = run / "csv" / "version_0"
        logs.mkdir(parents=True)
        header = "epoch,train/intent/weight,train/next_item/weight,train/value/weight,val/intent/auc\n"
        rows = "".join(f"{e},{i},{n},{v},\n{e},,,,0.7\n" for e, (n, i, v) in enumerate(weights))
        (logs / "metrics.csv").write_text(header + rows)


def test_tables_average_each_tasks_own_objective_runs(tmp_path, project_script):
    script = project_script("experiments/multitask_table.py")
    fake_run(tmp_path, "single_next_s42", 0.08, 0.55, 3.1)
    fake_run(tmp_path, "single_next_s1", 0.06, 0.56, 3.2, wall="1:02:03")
    fake_run(tmp_path, "fixed_next_s42", 0.05, 0.70, 1.05)
    fake_run(tmp_path, "unc_intent_s42", 0.04, 0.71, 1.04, weights=[(1.0, 1.0, 1.0), (0.7, 1.5, 1.25)])
    (tmp_path / "unc_value_s2").mkdir()  # unfinished: no metrics.json, left out
    runs = script.load(tmp_path)
    assert sorted(runs) == [("fixed", "next", 42), ("single", "next", 1), ("single", "next", 42),
                            ("unc", "intent", 42)]
    assert runs[("single", "next", 1)]["wall"] == 3723
    assert runs[("unc", "intent", 42)]["weights"] == {"next_item": 0.7, "intent": 1.5, "value": 1.25}

    table = script.runs_table(runs)
    # seed 42 first; the single-task run's own head in bold, its untrained heads in parentheses; epochs 1-based
    assert table[2] == "| single_next_s42 | **0.0800** | **0.1600** | (0.5500) | (3.1000) | 5 / 15 | 6 min 05 s |"
    assert table[3] == "| fixed_next_s42 | 0.0500 | 0.1000 | 0.7000 | 1.0500 | 5 / 15 | 6 min 05 s |"
    assert table[5] == "| single_next_s1 | **0.0600** | **0.1200** | (0.5600) | (3.2000) | 5 / 15 | 62 min 03 s |"

    means = script.means_table(runs)
    # next-item NDCG@10: single over seeds 42 and 1 (mean .07, sample sd .0141); fixed one seed; no uncertainty run
    assert means[2] == "| next-item NDCG@10 | 0.0700 ± 0.0141 | 0.0500 (1 seed) | – | 1, 42 |"
    # intent AUC comes only from runs whose objective is intent
    assert means[4] == "| intent AUC | – | – | 0.7100 (1 seed) | 42 |"
    differences = script.differences_table(runs)
    # fixed next item on seed 42: .05 - .08; no uncertainty next-item run; intent has no single-task run to pair
    assert differences[2] == "| next-item NDCG@10 | -0.0300 (better on 0 of 1 seeds) | – |"
    assert differences[4] == "| intent AUC | – | – |"
    assert script.weights_table(runs)[2] == "| unc_intent_s42 | 0.700 | 1.500 | 1.250 |"


def test_differences_pair_seeds_and_count_lower_rmse_as_better(tmp_path, project_script):
    script = project_script("experiments/multitask_table.py")
    for seed, single, fixed in ((42, 1.03, 1.02), (1, 1.00, 1.04)):
        fake_run(tmp_path, f"single_value_s{seed}", 0.01, 0.6, single)
        fake_run(tmp_path, f"fixed_value_s{seed}", 0.01, 0.6, fixed)
    fake_run(tmp_path, "unc_value_s2", 0.01, 0.6, 1.0)  # no single-task run of seed 2: not paired
    fake_run(tmp_path, "aux_value_s1", 0.01, 0.6, 0.99)
    runs = script.load(tmp_path)
    differences = script.differences_table(runs)
    assert differences[0] == ("| task, metric | multi, fixed 1/1/1 minus single | multi, uncertainty minus single "
                              "| multi, own head 1, others 0.1 minus single |")
    # RMSE: -.01 on seed 42 (better), +.04 on seed 1; mean +.015, sample sd of (-.01, .04) = .0354
    assert differences[5] == "| value RMSE | +0.0150 ± 0.0354 (better on 1 of 2 seeds) | – | -0.0100 (better on 1 of 1 seeds) |"
    # seed 1's aux run pairs with seed 1's single run (1.00); the means list every setting that has runs
    assert script.means_table(runs)[5] == "| value RMSE | 1.0150 ± 0.0212 | 1.0300 ± 0.0141 | 1.0000 (1 seed) | 0.9900 (1 seed) | 1, 2, 42 |"

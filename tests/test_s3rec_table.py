"""experiments/s3rec_table.py: finished runs become committed records, and the table averages the records."""
from __future__ import annotations

import json
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
METRICS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20"]


def fake_run(root: Path, seed: int, ndcg10: float, wall: str) -> None:
    run = root / "toys_sasrec" / f"seed{seed}"
    run.mkdir(parents=True)
    test = {m: 0.05 for m in METRICS} | {"ndcg@10": ndcg10, "mrr": 0.04}
    (run / "metrics.json").write_text(json.dumps({"test": test, "val": test}))
    (run / "run_info.json").write_text(json.dumps({"command": ["/venv/bin/recforge-train", "experiment=toys_sasrec",
                                                               f"seed={seed}"], "git_commit": "abc",
                                                   "started": "2026-11-27T03:00:00+00:00"}))
    run.with_suffix(".time").write_text(f"\tElapsed (wall clock) time (h:mm:ss or m:ss): {wall}\n")


def test_runs_are_recorded_and_averaged_against_the_published_row(tmp_path, project_script):
    script = project_script("experiments/s3rec_table.py")
    runs, records = tmp_path / "runs", tmp_path / "records"
    fake_run(runs, 1, 0.0400, "10:00.00")
    fake_run(runs, 2, 0.0360, "1:10:00")  # 70 minutes
    (runs / "toys_sasrec" / "seed3").mkdir()  # unfinished: no metrics.json, no record
    written = script.record_runs(runs, records)
    assert sorted(p.name for p in written) == ["toys_sasrec_seed1.json", "toys_sasrec_seed2.json"]
    record = json.loads((records / "toys_sasrec_seed2.json").read_text())
    assert record["test"]["ndcg@10"] == 0.036 and "mrr" not in record["test"]
    assert record["wall_seconds"] == 4200.0 and record["commit"] == "abc" and record["date"] == "2026-11-27"
    assert record["command"] == "recforge-train experiment=toys_sasrec seed=2"

    lines = script.table(records).splitlines()
    row = lines.index("| Toys | SASRec | published | 0.0463 | 0.0306 | 0.0675 | 0.0374 | 0.0941 | 0.0441 | | |")
    ours, ratio = ([cell.strip() for cell in lines[row + k].split("|")] for k in (1, 2))
    # cells: '', data, model, label, HR@5, NDCG@5, HR@10, NDCG@10, HR@20, NDCG@20, wall time, command, ''
    assert ours[3] == "ours (n=2, seeds 1,2)"
    assert ours[7] == "0.0380 ± 0.0028"  # mean .038, sample std |.040 - .036| / sqrt(2) = .00283
    assert ours[4] == "0.0500 ± 0.0000" and ours[10] == "40 min"  # (10 + 70) / 2 minutes
    assert ours[11] == "`recforge-train -m experiment=toys_sasrec seed=1,2 dataset.root=../shared/data`"
    assert ratio[3] == "ratio" and ratio[7] == f"{0.038 / 0.0374:.2f}" == "1.02"
    assert "| Toys | BERT4Rec | published |" in script.table(records)
    assert lines[-1] == "| all | | 2 timed runs | | | | | | | 1.3 h in all; 11 cells without a timed run | |"  # 80 min
    assert "ours: not run yet" in lines[lines.index(
        "| Toys | BERT4Rec | published | 0.0116 | 0.0071 | 0.0203 | 0.0099 | 0.0358 | 0.0138 | | |") + 1]


def test_the_total_estimates_three_seeds_of_every_cell_once_all_are_timed(tmp_path, project_script):
    script = project_script("experiments/s3rec_table.py")
    for dataset in script.DATASETS:
        for model, _ in script.MODELS:
            for seed, minutes in ((42, 10), (1, 30)):
                record = {"seed": seed, "test": {m: 0.01 for m in METRICS}, "wall_seconds": 60.0 * minutes}
                (tmp_path / f"{dataset}_{model}_seed{seed}.json").write_text(json.dumps(record))
    # 24 runs of 10 and 30 min = 8 h; 12 cells x 3 seeds x 20 min mean = 12 h
    assert script.totals(tmp_path) == "| all | | 24 timed runs | | | | | | | 8.0 h in all; all 12 cells × 3 seeds ≈ 12 h | |"
    for seed in (42, 1):
        (tmp_path / f"yelp_bert4rec_seed{seed}.json").unlink()
    # 22 runs, 11 x (10 + 30) min = 7.33 h
    assert script.totals(tmp_path) == "| all | | 22 timed runs | | | | | | | 7.3 h in all; 1 cell without a timed run | |"


def test_the_table_is_replaced_in_the_page_and_nothing_else(project_script):
    script = project_script("experiments/s3rec_table.py")
    page = "# title\n\nintro\n\n| data | model | n | x |\n|---|\n| old | row |\n\nReading the table: text\n"
    new = "| data | model | n | y |\n|---|\n| new | row |\n| second | row |"
    assert script.replace_table(page, new) == ("# title\n\nintro\n\n| data | model | n | y |\n|---|\n| new | row |\n"
                                               "| second | row |\n\nReading the table: text\n")
    real = (PROJECT / "experiments" / "results" / "s3rec.md").read_text()
    assert script.replace_table(real, script.table(script.RECORDS)) == real  # the committed page is up to date


def test_the_readme_multirun_selects_exactly_the_twelve_table_cells():
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser

    readme = (PROJECT / "experiments" / "README.md").read_text()
    sweep = re.search(r"recforge-train -m '(experiment=glob\([^']+\))' seed=42,1,2 \\\n", readme).group(1)
    override = OverridesParser.create().parse_overrides([sweep])[0]
    names = sorted(p.stem for p in (PROJECT / "src" / "recforge" / "conf" / "experiment").glob("*.yaml"))
    assert override.value().filter(names) == [f"{d}_{m}" for d in ("beauty", "sports", "toys", "yelp")
                                              for m in ("bert4rec", "gru4rec", "sasrec")]


def test_s3rec_rule_evaluations_get_their_own_rows_and_leaky_records_are_left_out(tmp_path, project_script):
    script = project_script("experiments/s3rec_table.py")
    runs, records = tmp_path / "runs", tmp_path / "records"
    fake_run(runs, 42, 0.0400, "10:00.00")
    evaluated = runs / "toys_sasrec" / "seed42" / "eval" / "2026-12-02_07-00-00"
    evaluated.mkdir(parents=True)
    s3rec = {m: 0.03 for m in METRICS}
    (evaluated / "metrics.json").write_text(json.dumps(
        {"split": "test", "metrics": s3rec | {"unreachable": 0.0}, "evaluation": {"mask_history": "s3rec"}}))
    written = script.record_runs(runs, records)
    assert sorted(p.name for p in written) == ["toys_sasrec_seed42.json", "toys_sasrec_seed42_s3rec.json"]
    record = json.loads((records / "toys_sasrec_seed42_s3rec.json").read_text())
    assert record["mask_history"] == "s3rec" and record["test"]["ndcg@10"] == 0.03 and record["wall_seconds"] is None
    lines = script.table(records).splitlines()
    row = lines.index("| Toys | SASRec | published | 0.0463 | 0.0306 | 0.0675 | 0.0374 | 0.0941 | 0.0441 | | |")
    assert lines[row + 1].startswith("| | | ours (n=1, seeds 42) | 0.0500 | 0.0500 | 0.0500 | 0.0400 |")
    assert lines[row + 3].startswith("| | | ours (S3-Rec masking, n=1, seeds 42) | 0.0300 |")
    assert lines[row + 4].split("|")[7].strip() == f"{0.03 / 0.0374:.2f}"
    # a record of the old target-sparing mask is not averaged into any row
    leaky = {"seed": 1, "test": {m: 0.9 for m in METRICS}, "wall_seconds": 60.0, "mask_history": "target spared"}
    (records / "yelp_sasrec_seed1.json").write_text(json.dumps(leaky))
    yelp = script.table(records).splitlines()
    row = next(i for i, line in enumerate(yelp) if line.startswith("| Yelp | SASRec | published"))
    assert yelp[row + 1].startswith("| | | ours: earlier runs used the leaky mask, re-run pending |")


def test_paper_setup_runs_get_their_own_row_above_the_default_rows(tmp_path, project_script):
    script = project_script("experiments/s3rec_table.py")
    runs, records = tmp_path / "runs", tmp_path / "records"
    fake_run(runs, 42, 0.0400, "10:00.00")
    paper = runs / "toys_sasrec_paper" / "seed42"
    paper.mkdir(parents=True)
    (paper / "metrics.json").write_text(json.dumps({"test": {m: 0.02 for m in METRICS} | {"ndcg@10": 0.0374}}))
    (paper / "config.yaml").write_text("evaluation:\n  mask_history: s3rec\n")  # the experiment tests under it
    paper.with_suffix(".time").write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 20:00.00\n")
    script.record_runs(runs, records)
    assert json.loads((records / "toys_sasrec_paper_seed42.json").read_text())["mask_history"] == "s3rec"
    lines = script.table(records).splitlines()
    row = lines.index("| Toys | SASRec | published | 0.0463 | 0.0306 | 0.0675 | 0.0374 | 0.0941 | 0.0441 | | |")
    label = "ours (paper setup: BCE with 1 negative, post-LN, targets weighed equally, S3-Rec masking, n=1, seeds 42)"
    assert lines[row + 1].startswith(f"| | | {label} | 0.0200 | 0.0200 | 0.0200 | 0.0374 |")
    assert lines[row + 1].endswith("| 20 min | `recforge-train experiment=toys_sasrec_paper seed=42 "
                                   "dataset.root=../shared/data` |")
    assert lines[row + 2].split("|")[7].strip() == "1.00"  # .0374 / published .0374
    assert lines[row + 3].startswith("| | | ours (n=1, seeds 42) | 0.0500 |")  # the default setup follows


def test_the_protocol_line_counts_test_samples_and_repeated_targets(tmp_path, project_script):
    script = project_script("experiments/s3rec_table.py")
    (tmp_path / "s3rec").mkdir()
    # users 1-3 of a toy file: user 3's last item (5) repeats an earlier one; user 4 has 2 items (not evaluated)
    for name in script.FILES.values():
        (tmp_path / "s3rec" / name).write_text("1 1 2 3\n2 2 3 4 1\n3 5 6 5\n4 1 2\n")
    assert script.test_counts(tmp_path, "yelp") == (3, 1)
    line = script.protocol(tmp_path)
    assert line.startswith("Protocol: leave-one-out split (last item test, second to last validation); full ranking")
    assert line.endswith("Beauty 3 (1, 33.33 %), Sports 3 (1, 33.33 %), Toys 3 (1, 33.33 %), Yelp 3 (1, 33.33 %).")
    page = "intro\n\nProtocol: old\n\n| data | model | n | x |\n|---|\n\nafter\n"
    assert script.replace_table(page, "| data | model | n | y |", "Protocol: new") == (
        "intro\n\nProtocol: new\n\n| data | model | n | y |\n\nafter\n")


def test_records_of_an_earlier_default_keep_their_own_rows_below_the_new_default(tmp_path, project_script):
    script = project_script("experiments/s3rec_table.py")
    runs, records = tmp_path / "runs", tmp_path / "records"
    fake_run(runs, 42, 0.0400, "10:00.00")
    script.record_runs(runs, records)
    moved = script.mark_earlier_setup(records, "toys_sasrec", "windows", "256 windows per batch",
                                      ["dataset.batch_targets=null"])
    assert [p.name for p in moved] == ["toys_sasrec_seed42_windows.json"]
    assert not (records / "toys_sasrec_seed42.json").exists()
    assert json.loads(moved[0].read_text())["setup"] == {"key": "windows", "label": "256 windows per batch",
                                                         "overrides": ["dataset.batch_targets=null"]}
    assert script.record_runs(runs, records) == []  # the marked run is not recorded again as the new default
    lines = script.table(records).splitlines()
    row = lines.index("| Toys | SASRec | published | 0.0463 | 0.0306 | 0.0675 | 0.0374 | 0.0941 | 0.0441 | | |")
    assert lines[row + 1].startswith("| | | ours: the current default not run yet |")
    assert lines[row + 2].startswith("| | | ours (earlier default: 256 windows per batch, n=1, seeds 42) | 0.0500 "
                                     "| 0.0500 | 0.0500 | 0.0400 |")
    assert lines[row + 2].endswith("| 10 min | `recforge-train experiment=toys_sasrec dataset.batch_targets=null "
                                   "seed=42 dataset.root=../shared/data` |")
    assert lines[row + 3].split("|")[7].strip() == f"{0.04 / 0.0374:.2f}"
    # a run of the new default takes the plain name and the first rows; the earlier rows follow
    new_runs = tmp_path / "new"
    fake_run(new_runs, 42, 0.0600, "20:00.00")
    script.record_runs(new_runs, records)
    lines = script.table(records).splitlines()
    assert lines[row + 1].startswith("| | | ours (n=1, seeds 42) | 0.0500 | 0.0500 | 0.0500 | 0.0600 |")
    assert lines[row + 3].startswith("| | | ours (earlier default: 256 windows per batch, n=1, seeds 42) |")
    assert lines[-1].startswith("| all | | 1 timed runs |")  # totals count the current default only


def test_marking_an_earlier_setup_refuses_a_bad_key_a_used_key_and_a_cell_without_records(tmp_path, project_script):
    import pytest

    script = project_script("experiments/s3rec_table.py")
    with pytest.raises(SystemExit, match="has no record of toys_sasrec's current default setup"):
        script.mark_earlier_setup(tmp_path, "toys_sasrec", "windows", "x", ["a=1"])
    with pytest.raises(SystemExit, match="the key 'Win dows' must be lower-case letters and digits"):
        script.mark_earlier_setup(tmp_path, "toys_sasrec", "Win dows", "x", ["a=1"])
    record = {"seed": 42, "test": {m: 0.01 for m in METRICS}, "wall_seconds": 60.0}
    (tmp_path / "toys_sasrec_seed42.json").write_text(json.dumps(record))
    (tmp_path / "toys_sasrec_seed42_windows.json").write_text(json.dumps(record | {"setup": {"key": "windows"}}))
    with pytest.raises(SystemExit, match="exists already; the setup key 'windows' was used before for toys_sasrec"):
        script.mark_earlier_setup(tmp_path, "toys_sasrec", "windows", "x", ["a=1"])

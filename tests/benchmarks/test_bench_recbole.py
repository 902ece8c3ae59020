"""benchmarks/recbole_compare.py, recbole_runner.py and recforge_bench_callbacks.py: pure helpers on hand-made
inputs, and the benchmark clock on a tiny real fit. RecBole itself is not needed (nor imported)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import recbole_compare as rc
import recbole_runner as rr

# ------------------------------------------------------------------------------------------- data export

# two users: "u7" with items 3, 1, 2, 4 and "u9" with items 2, 5, 1 (CSR, item ids from 1)
USERS, INDPTR, ITEMS = ["u7", "u9"], [0, 4, 7], [3, 1, 2, 4, 2, 5, 1]


def test_inter_lines_write_user_item_and_position():
    assert rc.inter_lines(USERS, INDPTR, ITEMS) == [
        "user_id:token\titem_id:token\ttimestamp:float",
        "u7\t3\t0", "u7\t1\t1", "u7\t2\t2", "u7\t4\t3",
        "u9\t2\t0", "u9\t5\t1", "u9\t1\t2",
    ]


def test_read_inter_orders_by_position_whatever_the_line_order(tmp_path):
    header, *rows = rc.inter_lines(USERS, INDPTR, ITEMS)
    path = tmp_path / "x.inter"
    path.write_text("\n".join([header, *reversed(rows)]) + "\n")
    assert rr.read_inter(path) == {"u7": ["3", "1", "2", "4"], "u9": ["2", "5", "1"]}


def test_histories_are_the_items_before_the_validation_and_test_targets_never_the_target():
    seqs = {"u7": ["3", "1", "2", "4"], "u9": ["2", "5", "2"], "u1": ["8"]}
    assert rr.histories(seqs, drop_last=2) == {"u7": ["3", "1"], "u9": ["2"]}
    assert rr.histories(seqs, drop_last=1) == {"u7": ["3", "1", "2"], "u9": ["5"]}  # u9's target 2 came before


def test_csr_keeps_key_order_and_empty_keys():
    assert rr.csr({0: [4, 5], 2: [7]}, 4) == ([0, 2, 2, 3, 3], [4, 5, 7])


def test_split_pairs_and_digest_name_the_same_samples_in_any_order():
    val = rc.split_pairs(USERS, INDPTR, ITEMS, [(0, 2), (1, 1)])  # second to last items
    assert val == [("u7", "2"), ("u9", "5")]
    digest = rr.split_digest(val)
    assert digest["count"] == 2
    assert rr.split_digest(reversed(val)) == digest
    assert rr.split_digest([("u7", "2"), ("u9", "1")])["sha256"] != digest["sha256"]


def test_split_matches_needs_every_part_equal():
    expected = {"train_targets": 3, "valid": {"count": 2, "sha256": "a"}, "test": {"count": 2, "sha256": "b"},
                "users": 2, "items": 5, "inter_file": "x"}
    got = {k: v for k, v in expected.items() if k != "inter_file"}
    assert rc.split_matches(expected, got)
    assert not rc.split_matches(expected, {**got, "train_targets": 4})
    assert not rc.split_matches(expected, {**got, "test": {"count": 2, "sha256": "c"}})
    # a general model (LightGCN) trains on every training interaction, not on every prefix's next item
    general = {**expected, "train_interactions": 5}
    assert rc.split_matches(general, {**got, "train_targets": 5}, general=True)
    assert not rc.split_matches(general, got, general=True)


# ------------------------------------------------------------------------------------------- RecBole settings


def experiment(model: str = "sasrec", **changes) -> dict:
    cfg = {
        "seed": 42, "hidden_size": 64,
        "dataset": {"max_len": 50, "batch_size": 256},
        "encoder": {"num_layers": 2, "num_heads": 2, "dropout": 0.2, "inner_size": None, "activation": "gelu"}
        if model == "sasrec" else {"gru_size": 64, "num_layers": 1, "dropout": 0.5},
        "item_embedder": {"init_std": 0.02},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001, "weight_decay": 0.0},
        "loss": {"_target_": "recforge.models.losses.CrossEntropy", "label_smoothing": 0.0},
        "scheduler": None, "evaluation": {"ks": [5, 10, 20]},
        "trainer": {"max_epochs": 200}, "callbacks": {"early_stopping": {"patience": 10}},
    }
    cfg.update(changes)
    return cfg


def test_recbole_config_copies_sizes_dropout_and_stops_at_the_same_epoch():
    c = rc.recbole_config(experiment(), "sasrec", "D", "C", None)
    assert (c["n_layers"], c["n_heads"], c["hidden_size"], c["inner_size"]) == (2, 2, 64, 256)
    assert c["hidden_dropout_prob"] == c["attn_dropout_prob"] == 0.2
    assert c["MAX_ITEM_LIST_LENGTH"] == 50 and c["train_batch_size"] == 256 and c["learning_rate"] == 0.001
    assert c["stopping_step"] == 9  # Lightning: stop after 10 bad epochs; RecBole: after stopping_step + 1
    assert c["epochs"] == 200 and c["topk"] == [5, 10, 20] and c["loss_type"] == "CE"
    assert c["train_neg_sample_args"] is None
    assert c["eval_args"] == {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}
    assert (c["data_path"], c["checkpoint_dir"]) == ("D", "C")


def test_recbole_config_for_gru4rec_and_an_epoch_cap():
    c = rc.recbole_config(experiment("gru4rec"), "gru4rec", "D", "C", 3)
    assert (c["embedding_size"], c["hidden_size"], c["num_layers"], c["dropout_prob"]) == (64, 64, 1, 0.5)
    assert c["epochs"] == 3 and "n_layers" not in c


def test_recbole_config_for_lightgcn_trains_with_bpr_on_interactions():
    cfg = experiment("sasrec", encoder={"max_len": 8}, item_embedder={"num_layers": 3, "init_std": 0.02},
                     loss={"_target_": "recforge.models.losses.BPR"})
    c = rc.recbole_config(cfg, "lightgcn", "D", "C", None)
    assert (c["embedding_size"], c["n_layers"], c["reg_weight"], c["train_batch_size"]) == (64, 3, 1e-5, 2048)
    assert c["train_neg_sample_args"]["distribution"] == "uniform" and c["train_neg_sample_args"]["sample_num"] == 1
    assert c["learning_rate"] == 0.001 and c["stopping_step"] == 9 and c["loss_type"] == "BPR"
    # recforge's LightGCN experiments train with CE (RecBole's side stays BPR); a sampled loss is no LightGCN pair
    assert rc.recbole_config({**cfg, "loss": experiment()["loss"]}, "lightgcn", "D", "C", None)["loss_type"] == "BPR"
    with pytest.raises(SystemExit, match="needs recforge.models.losses.BPR or recforge.models.losses.CrossEntropy"):
        rc.recbole_config({**cfg, "loss": {"_target_": "recforge.models.losses.SampledSoftmax"}}, "lightgcn", "D", "C",
                          None)


@pytest.mark.parametrize("change, needle", [
    ({"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}}, "torch.optim.Adam"),
    ({"scheduler": {"_target_": "x"}}, "scheduler"),
    ({"loss": {"_target_": "recforge.models.losses.CrossEntropy", "label_smoothing": 0.1}}, "label_smoothing"),
])
def test_recbole_config_refuses_settings_recbole_cannot_match(change, needle):
    with pytest.raises(SystemExit, match=needle):
        rc.recbole_config(experiment(**change), "sasrec", "D", "C", None)


def test_recbole_metric_names_become_recforge_names():
    assert rr.recforge_metric_names({"hit@10": 0.25, "ndcg@10": 0.125}) == {"hr@10": 0.25, "ndcg@10": 0.125}


# ------------------------------------------------------------------------------------------- jobs


def test_job_order_alternates_the_framework_that_goes_first():
    order = [(j.dataset, j.model, j.framework) for j in rc.job_order(rc.PAIRS)]
    assert order == [
        ("ml-100k", "sasrec", "recbole"), ("ml-100k", "sasrec", "recforge"),
        ("ml-100k", "gru4rec", "recforge"), ("ml-100k", "gru4rec", "recbole"),
        ("beauty", "sasrec", "recbole"), ("beauty", "sasrec", "recforge"),
        ("beauty", "gru4rec", "recforge"), ("beauty", "gru4rec", "recbole"),
        ("ml-100k", "lightgcn", "recbole"), ("ml-100k", "lightgcn", "recforge"),
        ("beauty", "lightgcn", "recforge"), ("beauty", "lightgcn", "recbole"),
    ]


def test_parse_jobs_keeps_the_benchmark_order_and_names_unknown_pairs():
    assert rc.parse_jobs("beauty:gru4rec, ml-100k:sasrec") == [("ml-100k", "sasrec"), ("beauty", "gru4rec")]
    assert rc.parse_jobs(None) == list(rc.PAIRS)
    with pytest.raises(SystemExit, match="unknown ml-1m:sasrec"):
        rc.parse_jobs("ml-1m:sasrec")


def test_finished_jobs_are_skipped_per_settings_and_failed_ones_rerun():
    settings = {"mask_history": True, "max_epochs": 2}
    records = [
        {"dataset": "ml-100k", "model": "sasrec", "framework": "recbole", "settings": settings, "status": "ok"},
        {"dataset": "ml-100k", "model": "sasrec", "framework": "recforge", "settings": settings, "status": "failed"},
        {"dataset": "beauty", "model": "sasrec", "framework": "recbole", "settings": settings,
         "status": "budget-capped"},
    ]
    done = rc.finished_keys(records)
    assert rc.record_key("ml-100k", "sasrec", "recbole", settings) in done
    assert rc.record_key("beauty", "sasrec", "recbole", settings) in done
    assert rc.record_key("ml-100k", "sasrec", "recforge", settings) not in done
    assert rc.record_key("ml-100k", "sasrec", "recbole", {**settings, "max_epochs": None}) not in done


def test_an_interrupted_recbole_job_keeps_its_directory_and_others_start_empty(tmp_path):
    recbole, recforge, fresh = tmp_path / "recbole", tmp_path / "recforge", tmp_path / "fresh"
    for job in (recbole, recforge):
        (job / "saved").mkdir(parents=True)
        (job / "saved" / "resume.pth").write_bytes(b"state")
        (job / "log.txt").write_text("attempt 1\n")
    assert rc.prepare_job_dir(recbole, "recbole") is True
    assert (recbole / "log.txt").read_text() == "attempt 1\n" and (recbole / "saved" / "resume.pth").is_file()
    assert rc.prepare_job_dir(recforge, "recforge") is False and list(recforge.iterdir()) == []
    (recbole / "saved" / "resume.pth").unlink()  # RecBole without a resume state: starts again, empty
    assert rc.prepare_job_dir(recbole, "recbole") is False and list(recbole.iterdir()) == []
    assert rc.prepare_job_dir(fresh, "recbole") is False and fresh.is_dir()


class _FakeRecBoleModel(torch.nn.Linear):
    """The two extra methods RecBole's AbstractRecommender has, around a small torch model."""

    def other_parameter(self):
        return {"kept": 3}

    def load_other_parameter(self, para):
        self.restored_other = para


def _fake_trainer(seed: int):
    from types import SimpleNamespace

    torch.manual_seed(seed)
    model = _FakeRecBoleModel(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()  # Adam moments exist
    trainer = SimpleNamespace(model=model, optimizer=optimizer, cur_step=2, best_valid_score=0.25,
                              saved_model_file=f"best-{seed}.pth", start_epoch=0)
    loader = SimpleNamespace(generator=torch.Generator().manual_seed(seed))
    return trainer, loader


def test_recbole_runner_state_restores_the_run_exactly(tmp_path):
    import random

    import numpy as np

    trainer, loader = _fake_trainer(1)
    torch.rand(5, generator=loader.generator)  # an epoch's shuffle
    bench = {"epochs": [{"epoch": 0, "elapsed": 1.5}, {"epoch": 1, "elapsed": 3.0}], "spent": 3.0, "attempts": 1}
    rr.save_state(trainer, loader, 1, bench, tmp_path / "resume.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume.pth"]  # the partial file was renamed
    # what the uninterrupted run draws next: the next shuffle, dropout, numpy and python draws
    expected = (torch.rand(5, generator=loader.generator), torch.rand(3), np.random.rand(2), random.random())

    other, other_loader = _fake_trainer(2)  # a new process: other weights, optimizer moments and random states
    state = torch.load(tmp_path / "resume.pth", weights_only=False)
    assert rr.restore_state(other, other_loader, state) == bench
    assert other.start_epoch == 2 and other.cur_step == 2 and other.best_valid_score == 0.25
    assert other.saved_model_file == "best-1.pth" and other.model.restored_other == {"kept": 3}
    assert torch.equal(other.model.weight, trainer.model.weight) and torch.equal(other.model.bias, trainer.model.bias)
    moments = [v["exp_avg"] for v in other.optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b["exp_avg"]) for a, b in zip(moments, trainer.optimizer.state_dict()["state"].values()))
    got = (torch.rand(5, generator=other_loader.generator), torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert np.array_equal(got[2], expected[2]) and got[3] == expected[3]


def test_a_restored_run_knows_when_nothing_is_left_to_train():
    from types import SimpleNamespace

    def trainer(cur_step: int, start_epoch: int):
        return SimpleNamespace(cur_step=cur_step, stopping_step=9, start_epoch=start_epoch, epochs=200)

    assert not rr.training_finished(trainer(9, 30), spent=100.0, budget=None)  # 9 without improvement: goes on
    assert rr.training_finished(trainer(10, 30), spent=100.0, budget=None)  # RecBole stops once 10 > 9
    assert rr.training_finished(trainer(0, 200), spent=100.0, budget=None)  # every epoch done
    assert rr.training_finished(trainer(0, 30), spent=100.0, budget=100.0)  # the time budget is spent
    assert not rr.training_finished(trainer(0, 30), spent=99.0, budget=100.0)


# ------------------------------------------------------------------------------------------- figures


EPOCHS = [{"epoch": 0, "elapsed": 2.0, "test": {"ndcg@10": 0.05}},
          {"epoch": 1, "elapsed": 4.5, "test": {"ndcg@10": 0.07}},
          {"epoch": 2, "elapsed": 7.0, "test": {"ndcg@10": 0.09}}]


def test_time_to_reach_is_the_end_of_the_first_epoch_at_or_above_the_target():
    assert rc.time_to_reach(EPOCHS, 0.07) == 4.5  # equal counts as reached
    assert rc.time_to_reach(EPOCHS, 0.06) == 4.5
    assert rc.time_to_reach(EPOCHS, 0.01) == 2.0
    assert rc.time_to_reach(EPOCHS, 0.10) is None
    assert rc.time_to_reach([{"epoch": 0, "elapsed": 1.0}], 0.0) is None  # no test metrics recorded


def record(framework: str, **values) -> dict:
    base = {"dataset": "ml-100k", "model": "sasrec", "framework": framework, "status": "ok",
            "settings": {"mask_history": True, "max_epochs": None, "budget_minutes": None, "threads": None},
            "best_epoch": 1, "epochs_run": 3, "epochs": EPOCHS, "machine": "m", "finished": "2026-11-26T12:00:00",
            "driver_command": "python benchmarks/recbole_compare.py", "command": f"{framework} cmd",
            "split_matches": True}
    return {**base, **values}


RECBOLE = record("recbole", time_to_best=300.0, train_seconds=600.0, eval_seconds=4.0, peak_rss_mb=900.0,
                 test={"hr@10": 0.14, "ndcg@10": 0.07})
RECFORGE = record("recforge", time_to_best=6.0, train_seconds=10.0, eval_seconds=0.5, peak_rss_mb=600.0,
                  test={"hr@10": 0.2, "ndcg@10": 0.0875})


def test_compare_gives_speedups_and_targets():
    c = rc.compare(RECBOLE, RECFORGE)
    assert c["recforge_time_to_reach"] == 4.5
    assert c["reach_speedup"] == pytest.approx(300 / 4.5)
    assert c["eval_speedup"] == pytest.approx(8.0)
    assert c["train_time_ratio"] == pytest.approx(60.0) and c["rss_ratio"] == pytest.approx(1.5)
    assert c["ndcg@10_change"] == pytest.approx(0.25)
    assert c["reach_met"] and c["eval_met"] and c["ndcg_met"]


def test_compare_when_recforge_never_reaches_recbole():
    c = rc.compare({**RECBOLE, "test": {"ndcg@10": 0.2}}, RECFORGE)
    assert c["recforge_time_to_reach"] is None and c["reach_speedup"] is None
    assert not c["reach_met"] and not c["ndcg_met"]


def test_render_shows_both_rows_the_ratios_and_the_targets():
    failed = {**RECFORGE, "status": "failed", "finished": "2026-11-27T00:00:00"}  # ignored: not finished
    text = rc.render([RECBOLE, RECFORGE, failed], note="DRAFT")
    assert "DRAFT" in text and "history masked in evaluation" in text
    assert "| ML-100K | SASRec | recbole | ok | 2 / 3 | 5.0 min | 5.0 min | 10.0 min | 200.0 | 4.0 s | 900 |" in text
    assert "| ML-100K | SASRec | recforge | ok | 2 / 3 | 4.5 s | 6.0 s | 10.0 s | 3.3 | 0.50 s | 600 |" in text
    resumed = rc.render([{**RECBOLE, "attempts": 3}, RECFORGE])
    assert "| ML-100K | SASRec | recbole | ok (3 processes) | 2 / 3 |" in resumed
    assert "| 66.7× met | 8.0× met | +25.0% met | 60.0× | 1.5× |" in text
    assert "Split check FAILED" not in text
    assert "Machine: m. Dates: 2026-11-26T12:00 to" in text


def test_render_names_every_machine_the_rows_ran_on():
    text = rc.render([RECBOLE, {**RECFORGE, "machine": "n"}])
    assert "Machines: m; n. Dates:" in text


def test_render_flags_a_split_mismatch():
    text = rc.render([{**RECBOLE, "split_matches": False}, RECFORGE])
    assert "Split check FAILED** for ml-100k" in text


def test_recforge_overrides_make_their_own_variant_and_leave_recbole_settings_alone():
    base = {"mask_history": True, "max_epochs": None, "budget_minutes": None, "threads": 1}
    assert rc.job_settings("recbole", base, ["dataset.train_stride=1"]) == base  # same RecBole run (and directory)
    assert rc.job_settings("recforge", base, []) == base
    assert rc.job_settings("recforge", base, ["dataset.train_stride=1"]) == {
        **base, "recforge_overrides": ["dataset.train_stride=1"]}
    assert rc.base_settings(rc.job_settings("recforge", base, ["a=1"])) == base
    assert rc.parse_override(" dataset.train_stride = 1 ") == "dataset.train_stride=1"
    for bad, needle in (("dataset.train_stride", "expected key=value"), ("=1", "expected key=value"),
                        ("trainer.max_epochs=3", "set by the benchmark"), ("+experiment=x", "set by the benchmark")):
        with pytest.raises(argparse.ArgumentTypeError, match=needle):
            rc.parse_override(bad)


def test_frameworks_selects_the_sides_to_run(tmp_path, monkeypatch):
    assert rc.parse_frameworks("recforge") == ("recforge",)
    assert rc.parse_frameworks("recbole, recforge,recbole") == ("recbole", "recforge")
    with pytest.raises(argparse.ArgumentTypeError, match="choose recbole, recforge or both"):
        rc.parse_frameworks("lightfm")
    ran: list[str] = []
    monkeypatch.setattr(rc, "BENCH", tmp_path / "bench")
    monkeypatch.setattr(rc, "run_recforge", lambda job, *a: ran.append(job.framework) or {"status": "failed"})
    monkeypatch.setattr(rc, "run_recbole", lambda job, *a: pytest.fail("only recforge was asked for"))
    monkeypatch.setattr(rc, "ensure_venv", lambda venv: pytest.fail("no RecBole job: no venv needed"))
    monkeypatch.setattr(rc, "export_dataset", lambda *a: {})
    rc.run_jobs(rc.parse_args(["--jobs", "beauty:sasrec", "--frameworks", "recforge", "--data-root", str(tmp_path),
                               "--out", str(tmp_path / "runs.jsonl")]))
    assert ran == ["recforge"]


def test_a_job_another_driver_finished_meanwhile_is_skipped(tmp_path, monkeypatch):
    out, base = tmp_path / "runs.jsonl", {"mask_history": True, "max_epochs": None, "budget_minutes": None,
                                          "threads": None}
    ran: list[str] = []

    def fake_recforge(job, *args):
        ran.append(job.dataset)  # meanwhile another driver finishes the Beauty job
        other = {**RECFORGE, "dataset": "beauty", "settings": base}
        out.write_text(json.dumps(other) + "\n")
        return {k: v for k, v in RECFORGE.items() if k not in ("settings", "framework", "dataset", "model")}

    monkeypatch.setattr(rc, "BENCH", tmp_path / "bench")
    monkeypatch.setattr(rc, "run_recforge", fake_recforge)
    monkeypatch.setattr(rc, "export_dataset", lambda *a: {})
    rc.run_jobs(rc.parse_args(["--jobs", "ml-100k:sasrec,beauty:sasrec", "--frameworks", "recforge",
                               "--data-root", str(tmp_path), "--out", str(out)]))
    assert ran == ["ml-100k"]
    assert [r["dataset"] for r in rc.read_jsonl(out)] == ["beauty", "ml-100k"]


def test_a_bad_recforge_override_ends_argument_parsing_with_one_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        rc.parse_args(["--report", "--recforge-override", "dataset.root=/elsewhere"])
    assert exit_info.value.code == 2
    assert "dataset.root is set by the benchmark for both frameworks" in capsys.readouterr().err


def test_run_jobs_reuses_the_finished_recbole_run_for_a_recforge_variant(tmp_path, monkeypatch):
    base = {"mask_history": True, "max_epochs": None, "budget_minutes": None, "threads": 1}
    out = tmp_path / "runs.jsonl"
    out.write_text(json.dumps({**RECBOLE, "settings": base}) + "\n" + json.dumps({**RECFORGE, "settings": base}) + "\n")
    ran: list[tuple[str, dict, str]] = []

    def fake_recforge(job, job_dir, args, settings, env):
        ran.append((job.framework, settings, job_dir.name))
        return {k: v for k, v in RECFORGE.items() if k not in ("settings", "framework", "dataset", "model")}

    monkeypatch.setattr(rc, "BENCH", tmp_path / "bench")
    monkeypatch.setattr(rc, "run_recforge", fake_recforge)
    monkeypatch.setattr(rc, "run_recbole", lambda *a: pytest.fail("the finished RecBole run must be reused"))
    monkeypatch.setattr(rc, "ensure_venv", lambda venv: pytest.fail("no RecBole job: no venv needed"))
    monkeypatch.setattr(rc, "export_dataset", lambda *a: {})
    args = rc.parse_args(["--jobs", "ml-100k:sasrec", "--threads", "1", "--data-root", str(tmp_path),
                          "--out", str(out), "--recforge-override", "dataset.train_stride=1"])
    rc.run_jobs(args)
    assert [(fw, s.get("recforge_overrides")) for fw, s, _ in ran] == [("recforge", ["dataset.train_stride=1"])]
    assert ran[0][2].startswith("ml-100k_sasrec_recforge_") and ran[0][2] != "ml-100k_sasrec_recforge_" + \
        rc.hashlib.sha256(rc.settings_key(base).encode()).hexdigest()[:8]  # its own directory
    rc.run_jobs(args)  # finished now: nothing runs again
    assert len(ran) == 1
    text = rc.render(rc.read_jsonl(out))
    assert text.count("## Settings:") == 1 and text.count("| ML-100K | SASRec | recbole |") == 1
    assert "| ML-100K | SASRec | recforge | ok |" in text
    assert "| ML-100K | SASRec | recforge `dataset.train_stride=1` | ok |" in text
    assert "| ML-100K | SASRec | default | .0700 | 66.7× met |" in text
    assert "| ML-100K | SASRec | `dataset.train_stride=1` | .0700 | 66.7× met |" in text
    assert "--recforge-override dataset.train_stride=1" in text  # the variant's driver command is listed too


# ------------------------------------------------------------------------------------------- RecBole masking


def test_mask_history_collate_returns_recbole_history_index_of_each_row():
    def collate(index):
        interaction = {"user_id": torch.tensor([2, 0, 1]), "item_id": torch.tensor([5, 3, 9])}
        return interaction, None, torch.arange(3), interaction["item_id"]

    indptr, flat = rr.csr({0: [4, 6], 1: [], 2: [7, 8, 1]}, 3)
    _, (rows, items), _, positive_i = rr.mask_history_collate(
        collate, torch.tensor(indptr), torch.tensor(flat), "user_id")([0, 1, 2])
    assert rows.tolist() == [0, 0, 0, 1, 1] and items.tolist() == [7, 8, 1, 4, 6]  # user 1 has no history
    assert positive_i.tolist() == [5, 3, 9]


# ------------------------------------------------------------------------------------------- recforge clock


def test_bench_clock_records_every_epoch_without_changing_training(compose_train, tmp_path):
    from recforge.train import train

    tiny = ["dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
            "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16", "callbacks.progress_bar=null",
            "logger=none", "trainer.max_epochs=3"]
    path = tmp_path / "bench.json"
    with_clock = train(compose_train(*tiny, "+callbacks.bench._target_=recforge_bench_callbacks.BenchClock",
                                     f"+callbacks.bench.path={path}"))
    bench = json.loads(path.read_text())
    assert [e["epoch"] for e in bench["epochs"]] == [0, 1, 2]
    elapsed = [e["elapsed"] for e in bench["epochs"]]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= bench["train_seconds"]
    assert bench["eval_seconds"] > 0 and bench["excluded_seconds"] > 0
    best = bench["epochs"][with_clock["best_epoch"]]
    # the tested checkpoint's weights: the bench's ranking metrics (hr, recall, ndcg, mrr @k, unreachable) equal
    # the run's (which also has the set and beyond-accuracy metrics)
    assert len(best["test"]) == 13 and set(best["test"]) <= set(with_clock["test"])
    assert best["test"] == pytest.approx({k: with_clock["test"][k] for k in best["test"]}, rel=1e-12)
    assert best["val"] == pytest.approx({k: with_clock["val"][k] for k in best["val"]}, rel=1e-12)

    (tmp_path / "run").rename(tmp_path / "run-with-clock")
    without = train(compose_train(*tiny))
    assert without["test"] == with_clock["test"]  # the extra test passes left every random stream alone


def test_recbole_never_sees_a_bare_dataset_name():
    """RecBole silently swaps a dataset named "ml-100k" for its own bundled copy (other timestamps, other order)."""
    assert rc.recbole_name("ml-100k") == "recforge-ml-100k"


def test_export_of_real_ml100k_holds_every_interaction_in_recforge_order(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RECFORGE_CACHE", str(tmp_path / "cache"))
    export = rc.export_dataset("ml-100k", "ml100k_sasrec", data_root, tmp_path / "data")
    path = Path(export["inter_file"])
    assert path == tmp_path / "data" / "recforge-ml-100k" / "recforge-ml-100k.inter"
    sequences = rr.read_inter(path)
    assert len(sequences) == export["users"] == 943 and export["items"] == 1682
    assert sum(map(len, sequences.values())) == 100_000
    assert export["valid"]["count"] == export["test"]["count"] == 943
    assert export["train_targets"] == 100_000 - 3 * 943  # n - 3 training targets per user (n - 1 transitions)
    assert export["train_interactions"] == 100_000 - 2 * 943  # a general model's: every training interaction
    test_pairs = [(user, items[-1]) for user, items in sequences.items()]
    assert rr.split_digest(test_pairs) == export["test"]

"""aggregate: mean, sample std, n, best and paired tests, against hand-computed values and scipy itself.

Hand-made numbers (conftest): test/hr@10 SASRec 0.30 0.32 0.34, GRU4Rec 0.20 0.21 0.25, Popularity 0.25 (seed 1);
test/ndcg@10 SASRec 0.15 0.16 0.20, GRU4Rec 0.10 0.17 0.12, Popularity 0.12; one GRU4Rec run failed.
"""
from __future__ import annotations

import math

import pytest
from scipy import stats

from recforge.errors import RecforgeError
from recforge.report.aggregate import (
    aggregate,
    default_row_keys,
    matches,
    parse_baseline,
    summarise,
)
from recforge.report.collect import collect_runs

METRICS = ["test/hr@10", "test/ndcg@10"]
SAS_HR, GRU_HR = [0.30, 0.32, 0.34], [0.20, 0.21, 0.25]
SAS_NDCG, GRU_NDCG = [0.15, 0.16, 0.20], [0.10, 0.17, 0.12]


def cell(table, metric, **keys):
    c = table.cells
    mask = c["metric"] == metric
    for k, v in keys.items():
        mask &= c[k] == v
    assert mask.sum() == 1, c
    return c[mask].iloc[0]


@pytest.fixture
def runs(hand_runs):
    return collect_runs([hand_runs])


def test_summarise_sample_std():
    import pandas as pd
    assert summarise(pd.Series([1.0, 2.0, 6.0])) == pytest.approx((3.0, math.sqrt(7.0), 3))  # ((4+1+9)/2)
    mean, std, n = summarise(pd.Series([0.5, None]))
    assert (mean, n) == (0.5, 1) and math.isnan(std)


def test_means_stds_n_and_failed_runs_excluded(runs):
    table = aggregate(runs, rows=["model"], metrics=METRICS)
    assert list(table.cells["model"].unique()) == ["GRU4Rec", "Popularity", "SASRec"]
    sas, gru = cell(table, "test/hr@10", model="SASRec"), cell(table, "test/hr@10", model="GRU4Rec")
    assert (sas["mean"], sas["std"], sas["n"]) == pytest.approx((0.32, 0.02, 3))
    assert (gru["mean"], gru["std"], gru["n"]) == pytest.approx((0.22, math.sqrt(0.0007), 3))  # failed run not counted
    ndcg = cell(table, "test/ndcg@10", model="GRU4Rec")
    assert (ndcg["mean"], ndcg["std"]) == pytest.approx((0.13, math.sqrt(0.0013)))
    pop = cell(table, "test/hr@10", model="Popularity")
    assert (pop["mean"], pop["n"]) == (0.25, 1) and math.isnan(pop["std"])


def test_best_per_metric_higher_and_lower_is_better(runs):
    table = aggregate(runs, rows=["model"], metrics=[*METRICS, "fit_seconds"], lower_better=["fit_seconds"])
    best = table.cells[table.cells["best"]]
    assert sorted(zip(best["metric"], best["model"])) == [
        ("fit_seconds", "GRU4Rec"), ("test/hr@10", "SASRec"), ("test/ndcg@10", "SASRec")]
    assert cell(table, "fit_seconds", model="GRU4Rec")["mean"] == pytest.approx(22.0)


def test_paired_ttest_against_baseline(runs):
    table = aggregate(runs, rows=["model"], metrics=METRICS, baseline={"model": "SASRec"})
    hr, ndcg = cell(table, "test/hr@10", model="GRU4Rec"), cell(table, "test/ndcg@10", model="GRU4Rec")
    assert hr["p"] == pytest.approx(stats.ttest_rel(GRU_HR, SAS_HR).pvalue)
    # hand computed: differences -0.10 -0.11 -0.09, t = -17.32 with 2 df: p = 1 - |t| / sqrt(t^2 + 2)
    assert hr["p"] == pytest.approx(1 - math.sqrt(300) / math.sqrt(302), rel=1e-6)
    assert ndcg["p"] == pytest.approx(stats.ttest_rel(GRU_NDCG, SAS_NDCG).pvalue)
    t = -0.04 / math.sqrt(0.0021 / 3)  # differences -0.05 +0.01 -0.08: mean -0.04, variance 0.0021
    assert ndcg["p"] == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), rel=1e-6)
    assert (hr["n_paired"], hr["significant"], ndcg["significant"]) == (3, True, False)
    pop = cell(table, "test/hr@10", model="Popularity")  # one seed: no test
    assert math.isnan(pop["p"]) and pop["n_paired"] == 1 and not pop["significant"]
    sas = cell(table, "test/hr@10", model="SASRec")
    assert sas["baseline"] and math.isnan(sas["p"])


def test_alpha_moves_the_marker(runs):
    table = aggregate(runs, rows=["model"], metrics=METRICS, baseline={"model": "SASRec"}, alpha=0.3)
    assert cell(table, "test/ndcg@10", model="GRU4Rec")["significant"]
    table = aggregate(runs, rows=["model"], metrics=METRICS, baseline={"model": "SASRec"}, alpha=0.001)
    assert not cell(table, "test/hr@10", model="GRU4Rec")["significant"]


def test_wilcoxon_against_baseline(runs):
    table = aggregate(runs, rows=["model"], metrics=METRICS, baseline={"model": "SASRec"}, test="wilcoxon")
    hr, ndcg = cell(table, "test/hr@10", model="GRU4Rec"), cell(table, "test/ndcg@10", model="GRU4Rec")
    assert hr["p"] == pytest.approx(stats.wilcoxon(GRU_HR, SAS_HR).pvalue)
    assert hr["p"] == pytest.approx(0.25)  # exact: all 3 differences negative, 2 * (1/8)
    assert ndcg["p"] == pytest.approx(0.5)  # signed ranks -2 +1 -3: W = 1, 2 * (2/8)
    assert not hr["significant"]


def test_baseline_matched_within_other_row_keys(tmp_path, make_run, run_result):
    values = {("SASRec", 0.001): (0.30, 0.31), ("SASRec", 0.01): (0.40, 0.45),
              ("GRU4Rec", 0.001): (0.20, 0.22), ("GRU4Rec", 0.01): (0.25, 0.26)}
    for (model, lr), pair in values.items():
        for seed, hr in enumerate(pair, 1):
            make_run(tmp_path / f"{model}-{lr}-{seed}", model, seed, run_result(hr, 0.1), lr=lr)
    runs = collect_runs([tmp_path])
    assert default_row_keys(runs) == ["model", "optimizer.lr"]
    table = aggregate(runs, rows=["model", "optimizer.lr"], metrics=["test/hr@10"],
                      baseline=parse_baseline("model=SASRec"))
    p = cell(table, "test/hr@10", model="GRU4Rec", **{"optimizer.lr": 0.01})["p"]
    assert p == pytest.approx(stats.ttest_rel([0.25, 0.26], [0.40, 0.45]).pvalue)
    assert matches(0.01, "0.01") and matches(0.001, "1e-3") and not matches("SASRec", "0.1")


def test_column_groups_have_their_own_best(tmp_path, make_run, run_result):
    for dataset, scores in {"beauty": {"SASRec": 0.1, "GRU4Rec": 0.2}, "toys": {"SASRec": 0.4, "GRU4Rec": 0.3}}.items():
        for model, hr in scores.items():
            make_run(tmp_path / f"{dataset}-{model}", model, 1, run_result(hr, 0.1), dataset=dataset)
    runs = collect_runs([tmp_path])
    assert default_row_keys(runs) == ["model", "dataset.name"]
    table = aggregate(runs, rows=["model"], cols=["dataset.name"], metrics=["test/hr@10"])
    best = table.cells[table.cells["best"]]
    assert sorted(zip(best["dataset.name"], best["model"])) == [("beauty", "GRU4Rec"), ("toys", "SASRec")]


def test_default_rows_ignore_seeds_paths_and_keys_implied_by_the_model(tmp_path, make_run, run_result):
    for model in ("SASRec", "GRU4Rec"):
        for seed in (1, 2):
            run = tmp_path / f"{model}-{seed}"
            make_run(run, model, seed, run_result(0.1, 0.1), hidden_size=64 if model == "SASRec" else 128,
                     extra={"save_path": str(run / "predictions")})
    assert default_row_keys(collect_runs([tmp_path])) == ["model"]


def test_default_rows_of_hand_sweep(runs):
    assert default_row_keys(runs) == ["model"]


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": ["modle"]}, "--rows key 'modle' is not in the collected runs; did you mean model"),
    ({"metrics": ["test/hr@50"]}, "--metrics key 'test/hr@50' is not in the collected runs"),
    ({"baseline": {"optimizer.lr": "0.001"}}, "--baseline key 'optimizer.lr' is not a row key"),
    ({"baseline": {"model": "BERT4Rec"}}, r"--baseline model=BERT4Rec matches no row .*GRU4Rec, Popularity, SASRec"),
    ({"lower_better": ["fit_seconds"]}, "--lower-better fit_seconds is not a reported metric .*; add it to --metrics"),
    ({"test": "ztest"}, "--test ztest is not a known test"),
])
def test_user_errors_name_the_key(runs, kwargs, message):
    args = {"rows": ["model"], "metrics": METRICS, **kwargs}
    with pytest.raises(RecforgeError, match=message):
        aggregate(runs, **args)


def test_malformed_baseline():
    assert parse_baseline("model=SASRec, optimizer.lr=0.01") == {"model": "SASRec", "optimizer.lr": "0.01"}
    with pytest.raises(RecforgeError, match="--baseline 'SASRec' must be key=value"):
        parse_baseline("SASRec")

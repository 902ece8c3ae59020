"""Markdown, CSV, LaTeX and HTML output of the hand-made sweep (see test_report_aggregate for the numbers)."""
from __future__ import annotations

import base64
import io
import math
import re
from datetime import datetime, timezone

import pandas as pd
import pytest
from scipy import stats

from recforge.report import render
from recforge.report.aggregate import aggregate
from recforge.report.collect import collect_runs

METRICS = ["test/hr@10", "test/ndcg@10"]


@pytest.fixture
def runs(hand_runs):
    return collect_runs([hand_runs])


@pytest.fixture
def table(runs):
    return aggregate(runs, rows=["model"], metrics=METRICS, baseline={"model": "SASRec"})


def test_markdown_cells_bold_best_and_marker(table, runs):
    text = render.markdown(table, failed=runs[runs["status"] == "failed"])
    lines = text.splitlines()
    assert lines[:5] == [
        "| model | test/hr@10 | test/ndcg@10 |",
        "|---|---:|---:|",
        "| GRU4Rec | 0.2200 ± 0.0265 (3) † | 0.1300 ± 0.0361 (3) |",
        "| Popularity | 0.2500 (1) | 0.1200 (1) |",
        "| SASRec | **0.3200** ± 0.0200 (3) | **0.1700** ± 0.0265 (3) |",
    ]
    assert "†: p < 0.05 against the baseline model=SASRec (paired t-test over seeds present in both rows)." in text
    assert "Not tested (fewer than 2 paired seeds, or identical results): Popularity." in text
    failed = next(r for r in runs.itertuples() if r.status == "failed")
    assert f"- {failed.run}: OutOfMemoryError: CUDA out of memory while allocating 2.00 GiB" in text


def test_markdown_column_groups_and_lower_is_better(runs):
    table = aggregate(runs, rows=["model"], cols=["dataset.name"], metrics=["fit_seconds"],
                      lower_better=["fit_seconds"])
    text = render.markdown(table)
    assert text.splitlines()[0] == "| model | synthetic · fit_seconds |"
    assert "| GRU4Rec | **22.0000** ± 2.6458 (3) |" in text
    assert "(lower is better for fit_seconds)" in text


def test_markdown_table_from_plain_rows():
    text = render.markdown_table(["name", "n", "note"], [["a|b", 3, ""], ("c", 0.5, None)], align="lr")
    assert text == ("| name | n | note |\n"
                    "|:---|---:|---|\n"
                    "| a\\|b | 3 | |\n"
                    "| c | 0.5 | None |")
    assert render.markdown_table(["x", "y"], [], align="c") == "| x | y |\n|:---:|---|"
    with pytest.raises(ValueError, match="needs 2 cells"):
        render.markdown_table(["x", "y"], [["only one"]])


def test_csv_has_separate_mean_std_n_p(table):
    frame = pd.read_csv(io.StringIO(render.csv(table)))
    assert list(frame.columns) == [
        "model", "metric", "mean", "std", "n", "p", "n_paired", "best", "significant", "baseline"]
    gru = frame[(frame["model"] == "GRU4Rec") & (frame["metric"] == "test/hr@10")].iloc[0]
    assert (gru["mean"], gru["std"], gru["n"], gru["n_paired"]) == pytest.approx((0.22, math.sqrt(0.0007), 3, 3))
    assert gru["p"] == pytest.approx(stats.ttest_rel([0.20, 0.21, 0.25], [0.30, 0.32, 0.34]).pvalue, rel=1e-8)
    assert bool(gru["significant"]) and not bool(gru["best"])
    pop = frame[(frame["model"] == "Popularity") & (frame["metric"] == "test/hr@10")].iloc[0]
    assert pop["n"] == 1 and math.isnan(pop["std"]) and math.isnan(pop["p"])


def test_latex_bold_best_and_dagger(table):
    tex = render.latex(table)
    assert r"\begin{tabular}{lrr}" in tex and r"model & test/hr@10 & test/ndcg@10 \\" in tex
    assert r"SASRec & \textbf{0.3200} $\pm$ 0.0200 (3) & \textbf{0.1700} $\pm$ 0.0265 (3) \\" in tex
    assert r"GRU4Rec & 0.2200 $\pm$ 0.0265 (3) $^\dagger$ & 0.1300 $\pm$ 0.0361 (3) \\" in tex
    assert tex.count(r"\textbf") == 2
    assert render.latex_escape("a_b 50% & #1") == r"a\_b 50\% \& \#1"


def test_html_is_self_contained(table, runs, hand_runs):
    png = b"\x89PNG\r\n\x1a\nfake"
    page = render.html(table, runs, [str(hand_runs)], {"curves_val_ndcg@10.png": png},
                       generated=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert "data:image/png;base64," + base64.b64encode(png).decode() in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "<link" not in page
    assert "<script src" not in page and "@import" not in page
    header = f"Generated 2026-01-02 03:04:05 UTC from 7 successful runs and 1 failed under <code>{hand_runs}</code>"
    assert header in page
    assert "Failed runs (1)" in page and "OutOfMemoryError: CUDA out of memory while allocating 2.00 GiB" in page
    row = re.search(r"<tr><td data-value=\"SASRec\">SASRec</td>(.*?)</tr>", page).group(1)
    assert 'class="num best" data-value="0.32"' in row and "<b>0.3200</b> ± 0.0200 (3)" in row
    assert "location.hash" in page and "sort" in page

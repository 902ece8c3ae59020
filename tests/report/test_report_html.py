"""report.html in headless Chromium: the page sorts its table from the URL fragment #sort=<column>&desc=1."""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from recforge.report.cli import report


class ResultRows(HTMLParser):
    """Text of every cell of the #results table body, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.in_results = self.in_body = self.in_cell = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.in_results = dict(attrs).get("id") == "results"
        self.in_body |= self.in_results and tag == "tbody"
        if self.in_body and tag == "tr":
            self.rows.append([])
        if self.in_body and tag == "td":
            self.in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        self.in_cell &= tag != "td"
        self.in_body &= tag != "tbody"

    def handle_data(self, data: str) -> None:
        if self.in_cell:
            self.rows[-1][-1] += data


def dom_rows(page: Path, fragment: str) -> list[list[str]]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed: apt-get install chromium to run the HTML rendering test")
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=2000",
                           "--dump-dom", f"{page.as_uri()}{fragment}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = ResultRows()
    parser.feed(proc.stdout)
    return parser.rows


def test_sorting_from_url_fragment(hand_runs):
    report([str(hand_runs), "--metrics", "test/hr@10,test/ndcg@10", "--baseline", "model=SASRec", "--html"])
    page = hand_runs / "report" / "report.html"
    as_written = dom_rows(page, "")
    assert [r[0] for r in as_written] == ["GRU4Rec", "Popularity", "SASRec"]
    # means: hr@10 GRU4Rec 0.22, Popularity 0.25, SASRec 0.32; ndcg@10 0.13, 0.12, 0.17
    by_ndcg_desc = dom_rows(page, "#sort=2&desc=1")
    assert [(r[0], r[2]) for r in by_ndcg_desc] == [
        ("SASRec", "0.1700 ± 0.0265 (3)"), ("GRU4Rec", "0.1300 ± 0.0361 (3)"), ("Popularity", "0.1200 (1)")]
    by_hr_asc = dom_rows(page, "#sort=1")
    assert [(r[0], r[1]) for r in by_hr_asc] == [
        ("GRU4Rec", "0.2200 ± 0.0265 (3) †"), ("Popularity", "0.2500 (1)"), ("SASRec", "0.3200 ± 0.0200 (3)")]
    by_model_desc = dom_rows(page, "#sort=0&desc=1")
    assert [r[0] for r in by_model_desc] == ["SASRec", "Popularity", "GRU4Rec"]

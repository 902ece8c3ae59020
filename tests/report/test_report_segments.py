"""recforge-report --html includes the user-segments page (recforge-segment's segments.html) of each run that has
one, as written, and nothing when no run has one."""
from __future__ import annotations

from pathlib import Path

from recforge.report.cli import report

FRAGMENT = ('<section class="segments"><h3>ml-100k, SASRec</h3>'
            '<table class="segments"><tr><td>0</td></tr></table></section>')


def test_html_report_includes_segment_pages_of_the_runs_that_have_one(hand_runs: Path, tmp_path: Path):
    runs = sorted(p for p in hand_runs.iterdir() if p.is_dir() and (p / "metrics.json").is_file())
    (runs[0] / "segments").mkdir()
    (runs[0] / "segments" / "segments.html").write_text(FRAGMENT)
    failed = next(p for p in hand_runs.iterdir() if (p / "failed.json").is_file())
    (failed / "segments").mkdir()  # a failed run's page is not shown
    (failed / "segments" / "segments.html").write_text(FRAGMENT.replace("ml-100k", "failed-run"))

    report([str(hand_runs), "--html", "--out", str(tmp_path / "with")])
    page = (tmp_path / "with" / "report.html").read_text()
    assert page.count("<h2>User segments</h2>") == 1 and page.count(FRAGMENT) == 1  # inserted unescaped, once
    assert f"<code>{runs[0].resolve()}</code> (<code>recforge-segment</code>)" in page
    assert "failed-run" not in page
    assert page.index("<h2>User segments</h2>") < page.index("<h2>Runs</h2>")

    (runs[0] / "segments" / "segments.html").unlink()
    report([str(hand_runs), "--html", "--out", str(tmp_path / "without")])
    assert "User segments" not in (tmp_path / "without" / "report.html").read_text()

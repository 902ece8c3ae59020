"""End to end: a real 2 models x 2 seeds recforge-train multirun, then recforge-report on its sweep folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib import image

BIN = Path(sys.executable).parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Multirun on a small synthetic dataset (200 users, 100 items, 2 epochs): about 10 s on one core."""
    tmp = tmp_path_factory.mktemp("multirun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECFORGE_CACHE": str(tmp / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [str(BIN / "recforge-train"), "-m", "encoder=sasrec,popularity", "seed=1,2", "trainer.max_epochs=2",
         "logger=csv", "callbacks=none", f"hydra.sweep.dir={tmp / 'sweep'}", f"dataset.root={tmp}",
         "dataset.reader.num_users=200", "dataset.reader.num_items=100"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = subprocess.run([str(BIN / "recforge-report"), str(tmp / "sweep"), "--html"], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    return tmp / "sweep"


def direct_means(sweep: Path) -> dict[tuple[str, str], list[float]]:
    """(encoder override, test/<metric>) -> values read straight from each run's metrics.json."""
    values: dict[tuple[str, str], list[float]] = {}
    for run in sweep.glob("*_*encoder=*"):
        encoder = "SASRec" if "encoder=sasrec" in run.name else "Popularity"
        for name, value in json.loads((run / "metrics.json").read_text())["test"].items():
            values.setdefault((encoder, f"test/{name}"), []).append(value)
    return values


def test_report_means_match_metrics_json(sweep):
    table = pd.read_csv(sweep / "report" / "report.csv").set_index(["model", "metric"])
    direct = direct_means(sweep)
    assert sorted(table.index.get_level_values("model").unique()) == ["Popularity", "SASRec"]
    ranking, beyond = ("hr", "ndcg", "mrr", "recall", "precision", "map"), ("avg_popularity", "coverage", "gini",
                                                                            "novelty")
    assert list(table.loc["SASRec"].index) == [f"test/{name}@{k}" for k in (10, 20) for name in ranking + beyond]
    for (model, metric), row in table.iterrows():
        values = direct[(model, metric)]
        assert len(values) == 2 and row["n"] == 2
        # report.csv keeps 10 significant digits (avg_popularity is in the tens)
        assert row["mean"] == pytest.approx(sum(values) / 2, rel=1e-9, abs=1e-9)
        assert row["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, rel=1e-9, abs=1e-9)


def test_plots_are_valid_pngs(sweep):
    pngs = sorted((sweep / "report" / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["curves_val_ndcg@10.png"]  # Popularity logs no validation curve
    for path in pngs:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        pixels = image.imread(path)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
    html = (sweep / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,iVBORw0KGgo") == len(pngs)  # base64 of the PNG signature

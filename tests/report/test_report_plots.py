"""Plots: sweep lines hold the group means, curves come from csv/metrics.csv or TensorBoard events."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
from matplotlib import image

from recforge.errors import RecforgeError
from recforge.report import plots
from recforge.report.collect import collect_runs

CSV = """epoch,step,train/loss,val/hr@10,val/ndcg@10,test/ndcg@10
0,8,,0.30,0.11,
0,8,5.8,,,
1,17,,0.35,0.14,
1,17,5.5,,,
2,26,,0.36,0.13,
2,26,,,,0.12
"""


def test_file_name_and_log_scale():
    assert plots.file_name("test/hr@10", "optimizer.lr") == "test_hr@10_vs_optimizer.lr.png"
    assert plots.log_scale(np.array([1e-4, 1e-3, 1e-2])) and not plots.log_scale(np.array([0.01, 0.5]))
    assert not plots.log_scale(np.array([0.0, 1.0, 100.0]))


@pytest.fixture
def lr_sweep(tmp_path, make_run, run_result):
    """SASRec at lr 1e-4, 1e-3, 1e-2 (hr@10 = 0.1, 0.2, 0.3 +- 0.01 over two seeds) and GRU4Rec at 1e-3."""
    for i, lr in enumerate((1e-4, 1e-3, 1e-2)):
        for seed, noise in ((1, -0.01), (2, 0.01)):
            make_run(tmp_path / f"sas-{lr}-{seed}", "SASRec", seed, run_result(0.1 * (i + 1) + noise, 0.1), lr=lr)
    make_run(tmp_path / "gru", "GRU4Rec", 1, run_result(0.15, 0.1), lr=1e-3)
    return collect_runs([tmp_path])


def test_sweep_figure_means_and_log_axis(lr_sweep):
    fig = plots.sweep_figure(lr_sweep, "optimizer.lr", "test/hr@10", ["model", "optimizer.lr"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar containers: (data line, caps, bars)
    assert sorted(lines) == ["GRU4Rec", "SASRec"]
    assert list(lines["SASRec"].get_xdata()) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert list(lines["SASRec"].get_ydata()) == pytest.approx([0.1, 0.2, 0.3])
    assert list(lines["GRU4Rec"].get_ydata()) == pytest.approx([0.15])
    png = image.imread(io.BytesIO(plots.sweep_plot(lr_sweep, "optimizer.lr", "test/hr@10", ["model"])), format="png")
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100


def test_sweep_rejects_non_numeric_key(lr_sweep):
    with pytest.raises(RecforgeError, match="--x model has non-numeric values"):
        plots.sweep_figure(lr_sweep, "model", "test/hr@10", [])


def test_curve_from_lightning_csv(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(CSV)
    curve = plots.read_curve(tmp_path, "val/ndcg@10")
    assert list(curve.index) == [0, 1, 2] and list(curve) == pytest.approx([0.11, 0.14, 0.13])
    assert plots.read_curve(tmp_path, "val/mrr@10") is None


def test_curve_from_tensorboard_when_no_csv(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    for epoch, (step, value) in enumerate([(9, 0.2), (19, 0.25), (29, 0.27)]):
        writer.add_scalar("train/loss", 5.0 - epoch, step - 1)
        writer.add_scalar("val/ndcg@10", value, step)
        writer.add_scalar("epoch", epoch, step)
    writer.close()
    curve = plots.read_curve(tmp_path, "val/ndcg@10")
    assert list(curve.index) == [0, 1, 2] and list(curve) == pytest.approx([0.2, 0.25, 0.27])


def test_curves_figure_one_line_per_run(tmp_path, make_run, run_result):
    for seed in (1, 2):
        run = make_run(tmp_path / f"run{seed}", "SASRec", seed, run_result(0.3, 0.1))
        (run / "csv").mkdir()
        (run / "csv" / "metrics.csv").write_text(CSV.replace("0.14", str(0.14 + seed / 100)))
    make_run(tmp_path / "pop", "Popularity", 1, run_result(0.2, 0.1))  # no per-epoch log: no line
    runs = collect_runs([tmp_path])
    ax = plots.curves_figure(runs, "val/ndcg@10", ["model"]).axes[0]
    ys = sorted(tuple(round(y, 6) for y in line.get_ydata()) for line in ax.get_lines())
    assert ys == [(0.11, 0.15, 0.13), (0.11, 0.16, 0.13)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SASRec"]
    assert plots.curves_figure(runs, "val/mrr@10", ["model"]) is None
    assert math.isclose(ax.get_lines()[0].get_xdata()[-1], 2)

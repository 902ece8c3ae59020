"""User segments (recforge-segment): k-means shape and determinism, k by silhouette, profiles against hand counts,
the page, and the command on a tiny trained run (its per-user metrics average to the run's test metrics)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict
from scipy import sparse

from recforge.analysis import segments as seg
from recforge.analysis.segment_page import Page, html_fragment, markdown, segments_csv
from recforge.segment import item_descriptions, load_run, main
from recforge.train import train

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("recforge-segment")
TINY = ["dataset.reader.num_users=120", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
        "dataset.max_len=10", "dataset.batch_size=32", "hidden_size=16", "callbacks.progress_bar=null",
        "logger=csv", "trainer.max_epochs=2"]


def blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points around far-apart centres in 8 dimensions: (U, 8) and the blob of each (U,)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[: len(sizes)] * 20.0
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return centres[truth] + rng.normal(size=(len(truth), 8)), truth


# ------------------------------------------------------------------------------------------- clustering


def test_renumber_by_size_numbers_the_largest_segment_zero():
    # sizes: label 0 -> 1 user, label 1 -> 3, label 2 -> 2; equal sizes would go by first row
    assert seg.renumber_by_size(np.array([2, 2, 0, 1, 1, 1]), 3).tolist() == [1, 1, 2, 0, 0, 0]
    assert seg.renumber_by_size(np.array([1, 0, 1, 0]), 2).tolist() == [0, 1, 0, 1]


def test_kmeans_labels_have_one_segment_per_user_and_repeat_per_seed():
    states, truth = blobs([40, 25, 10])
    labels = seg.cluster(states, 3, seed=7)
    assert labels.shape == (75,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [40, 25, 10]  # numbered by size
    assert labels.tolist() == truth.tolist()  # the blobs, exactly
    noise = np.random.default_rng(1).normal(size=(200, 16))  # no structure: the starts decide
    assert seg.cluster(noise, 5, seed=3).tolist() == seg.cluster(noise, 5, seed=3).tolist()
    assert any(seg.cluster(noise, 5, seed=s).tolist() != seg.cluster(noise, 5, seed=3).tolist() for s in (4, 5, 6))
    with pytest.raises(ValueError, match="k=76"):
        seg.cluster(states, 76, seed=0)


def test_silhouette_chooses_the_number_of_blobs():
    states, _ = blobs([30, 30, 30, 30])
    choice = seg.choose_k(states, range(2, 7), seed=0)
    assert choice.k == 4 and list(choice.scores) == [2, 3, 4, 5, 6] and choice.sample_size is None
    assert choice.scores[4] == max(choice.scores.values()) and choice.scores[4] > 0.8
    sampled = seg.choose_k(states, [2, 4], seed=0, sample_size=50)
    assert sampled.k == 4 and sampled.sample_size == 50
    assert math.isnan(seg.silhouette(states, np.zeros(120, dtype=np.int64), 0, None))  # one segment
    with pytest.raises(ValueError):
        seg.choose_k(states, [1, 2], seed=0)


def test_pca_projection_shape_and_variance():
    states, _ = blobs([20, 20])
    coords, explained = seg.project(states, seed=0)
    assert coords.shape == (40, 2) and explained.shape == (2,)
    assert explained[0] > 0.8  # two blobs: one direction holds nearly all the variance
    sides = np.sign(coords[:, 0])  # the first component separates the blobs
    assert set(sides[:20]) == {sides[0]} and set(sides[20:]) == {-sides[0]}
    assert np.array_equal(seg.project(states, seed=0)[0], coords)


# ------------------------------------------------------------------------------------------- profiles


def test_history_matrix_counts_the_items_before_each_test_position():
    items = np.array([1, 2, 3, 4, 2, 2, 5, 1])  # user 0: 1 2 3 4, user 1: 2 2 5 1
    indptr = np.array([0, 4, 8])
    m = seg.history_matrix(items, indptr, users=np.array([1, 0]), positions=np.array([3, 2]), num_items=5)
    assert m.toarray().tolist() == [[0, 0, 2, 0, 0, 1],  # user 1 before position 3: 2 2 5
                                    [0, 1, 1, 0, 0, 0]]  # user 0 before position 2: 1 2


def test_profiles_match_hand_counts():
    # four users; segments 0 = users 0, 1 and 1 = users 2, 3; items 1..3, item 1 "A|B", item 2 "B", item 3 "C"
    history = sparse.csr_matrix(np.array([[0, 2, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]]))
    labels = np.array([0, 0, 1, 1])
    item_labels, names = seg.label_matrix([[], ["A", "B"], ["B"], ["C"]])
    assert names == ["A", "B", "C"] and item_labels.toarray().tolist() == [[0, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]]
    ndcg, hr = np.array([1.0, 0.5, 0.0, 0.25]), np.array([1.0, 1.0, 0.0, 1.0])
    first, second, everyone = seg.profiles(labels, 2, history, ndcg, hr, item_labels, names, top=2)
    assert (first.segment, first.users, first.share, first.ndcg, first.hr) == (0, 2, 0.5, 0.75, 1.0)
    assert first.items == [(1, 1.0), (2, 0.5)]  # item 1: both users; item 2: one of two
    # segment 0 interactions: item 1 three times, item 2 once -> A 3/4, B 4/4; all users: A 3/7, B 5/7, C 2/7
    assert [(n, s) for n, s, _ in first.labels] == [("B", 1.0), ("A", 0.75)]
    assert [lift for _, _, lift in first.labels] == pytest.approx([1.0 / (5 / 7), 0.75 / (3 / 7)])
    assert second.items == [(3, 1.0), (2, 0.5)] and (second.ndcg, second.hr) == (0.125, 0.5)
    assert (everyone.segment, everyone.users, everyone.share) == (None, 4, 1.0)
    assert everyone.ndcg == pytest.approx(0.4375) and everyone.hr == 0.75
    assert everyone.items == [(1, 0.5), (2, 0.5)]  # equal shares: the lower id first


def test_page_tables_say_what_the_profiles_hold():
    profile = seg.Profile(0, 3, 0.75, 0.12345, 0.5, [(1, 2 / 3)], [("Drama", 0.4, 1.25)])
    total = seg.Profile(None, 4, 1.0, 0.1, 0.25, [(1, 0.5)], [("Drama", 0.32, 1.0)])
    page = Page("ml-100k, SASRec", ["k = 1 (given)", "run `/x`"], [profile, total], ["", "Toy Story (1995)"], "genres")
    text = markdown(page)
    assert "| 0 | 3 (75 %) | .1235 | .5000 | Toy Story (1995) 67 % | Drama 40 % ×1.25 |" in text
    assert "| all | 4 (100 %) | .1000 | .2500 | Toy Story (1995) 50 % | Drama 32 % ×1.00 |" in text
    fragment = html_fragment(page, b"\x89PNG", "caption")
    assert "<code>/x</code>" in fragment and "data:image/png;base64,iVBORw==" in fragment
    assert "<td>Toy Story (1995) 67 %</td>" in fragment and "<html" not in fragment
    assert segments_csv(np.array(["u7", "u9"], dtype=object), np.array([1, 0])) == "user,segment\nu7,1\nu9,0\n"


# ------------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-epoch SASRec run on 120 synthetic users."""
    root = tmp_path_factory.mktemp("segment")
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=TINY)
    with open_dict(cfg):
        cfg.paths.root_dir, cfg.paths.output_dir = str(PROJECT), str(root / "run")
        cfg.paths.cache_dir = str(root / "cache")
    train(cfg)
    return root / "run"


def read_segments(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="") as fh:
        return [(row["user"], int(row["segment"])) for row in csv.DictReader(fh)]


def test_segments_of_a_run_average_to_its_test_metrics_and_repeat(tiny_run, capsys):
    main([str(tiny_run), "--k", "3", "--seed", "1"])
    out = tiny_run / "segments"
    assert sorted(p.name for p in out.iterdir()) == ["segments.csv", "segments.html", "segments.md", "segments.png"]
    rows = read_segments(out / "segments.csv")
    _, datamodule, _, _ = load_run(tiny_run, "best")
    assert [u for u, _ in rows] == [str(u) for u in datamodule.load_sequences().user_ids]  # raw ids, every user
    assert sorted({s for _, s in rows}) == [0, 1, 2]
    sizes = np.bincount([s for _, s in rows]).tolist()
    assert sizes == sorted(sizes, reverse=True)
    test = json.loads((tiny_run / "metrics.json").read_text())["test"]
    table = (out / "segments.md").read_text()
    overall = f"| all | 120 (100 %) | {test['ndcg@10']:.4f} | {test['hr@10']:.4f} |".replace("0.", ".")
    assert overall in table and "k = 3 (given)" in table and "random_state 1" in table
    assert "most frequent categories (share of interactions, lift)" in table  # the synthetic items' category
    assert (out / "segments.png").read_bytes()[:4] == b"\x89PNG"
    first = (out / "segments.csv").read_text()
    main([str(tiny_run), "--k", "3", "--seed", "1"])  # same seed, same segments, replaced in place
    assert (out / "segments.csv").read_text() == first
    assert not [p for p in tiny_run.iterdir() if p.name.startswith(".segments")]  # no temporary folder left


def test_k_is_chosen_by_silhouette_when_not_given(tiny_run, tmp_path, capsys):
    main([str(tiny_run), "--k-max", "4", "--out", str(tmp_path / "page")])
    table = (tmp_path / "page" / "segments.md").read_text()
    chosen = int(table.split("- k = ")[1].split(",")[0])
    assert "chosen by the highest silhouette over k = 2..4" in table and 2 <= chosen <= 4
    assert len({s for _, s in read_segments(tmp_path / "page" / "segments.csv")}) == chosen


def test_item_genres_come_from_the_movielens_item_file(data_root, tmp_path):
    from hydra.utils import instantiate
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=["dataset=ml-100k", f"dataset.root={data_root}"])
    datamodule = instantiate(cfg.dataset, cache_dir=str(tmp_path))
    names, labels, kind = item_descriptions(datamodule)
    ids = [str(i) for i in datamodule.load_sequences().item_ids]
    toy = ids.index("1")  # u.item line 1: Toy Story (1995), Animation|Children's|Comedy
    assert kind == "genres" and names[toy] == "Toy Story (1995)"
    assert labels[toy] == ["Animation", "Children's", "Comedy"]
    assert len(names) == len(labels) == 1683 and labels[0] == []


def test_bad_input_ends_in_one_line_and_writes_nothing(tiny_run, tmp_path, capsys):
    before = sorted(p.name for p in tiny_run.iterdir())
    with pytest.raises(SystemExit) as exit_:
        main([str(tiny_run), "--k", "121", "--out", str(tmp_path / "page")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "--k 121 is larger than the number of users" in err and "(120)" in err
    assert not (tmp_path / "page").exists() and sorted(p.name for p in tiny_run.iterdir()) == before

    missing = tmp_path / "no-such-run"
    proc = subprocess.run([str(SCRIPT), str(missing), "--k", "8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"recforge: error: RUN {missing}: no such run directory; expected a directory written by recforge-train."]
    assert not missing.exists()

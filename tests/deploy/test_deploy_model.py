"""Loading a run for deployment: checkpoint resolution, the scorer, the item id map (file, rebuilt, missing)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recforge.deploy.model import dataset_config, load_model, resolve_checkpoint
from recforge.errors import RecforgeError


def test_run_dir_resolves_to_its_best_checkpoint_and_a_file_to_its_run(tiny_run: Path) -> None:
    best = Path(json.loads((tiny_run / "metrics.json").read_text())["best_checkpoint"])
    assert resolve_checkpoint(tiny_run) == (tiny_run, best)
    last = tiny_run / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(last) == (tiny_run.resolve(), last)


def test_bad_checkpoint_paths_are_one_sentence_errors(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RecforgeError, match="not a recforge-train run directory"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(RecforgeError, match="no such checkpoint file"):
        resolve_checkpoint(tmp_path / "missing.ckpt")
    stray = tmp_path / "stray.ckpt"
    shutil.copy(tiny_run / "checkpoints" / "last.ckpt", stray)
    with pytest.raises(RecforgeError, match="must stay in its run directory"):
        resolve_checkpoint(stray)


def test_damaged_checkpoint_is_a_user_error(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    damaged = run / "checkpoints" / "last.ckpt"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(RecforgeError, match="last.ckpt"):
        load_model(damaged)


def test_scorer_equals_the_lightning_modules_score(tiny_run: Path, lightning_module, histories) -> None:
    model = load_model(tiny_run)
    items = histories(7)
    with torch.inference_mode():
        torch.testing.assert_close(model.scorer(items), lightning_module.score(items), atol=0, rtol=0)
    assert (model.num_items, model.max_len, model.dataset) == (59, 10, "synthetic")
    assert model.name == f"{tiny_run.name}/checkpoints/epoch001.ckpt"


def test_item_ids_come_from_item_ids_json(tiny_run: Path) -> None:
    saved = json.loads((tiny_run / "item_ids.json").read_text())["item_ids"]
    ids = load_model(tiny_run, ids="file").item_ids
    assert ids is not None and ids.raw == saved and ids.raw[0] == ""
    assert ids.num_items == 59 and ids.internal(saved[7]) == 7 and ids.internal("no such id") is None


def test_older_run_without_item_ids_json_rebuilds_the_same_map(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "old-run"
    shutil.copytree(tiny_run, run)
    (run / "item_ids.json").unlink()
    only_file = load_model(run, ids="file")
    assert only_file.item_ids is None and "no item_ids.json" in str(only_file.item_ids_problem)
    assert only_file.num_items == 59  # from dataset_stats.json
    rebuilt = load_model(run, ids="require").item_ids
    assert rebuilt is not None and rebuilt.source.startswith("rebuilt from")
    assert rebuilt.raw == json.loads((tiny_run / "item_ids.json").read_text())["item_ids"]


def test_rebuild_failure_names_the_data_root_option(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "old-run"
    shutil.copytree(tiny_run, run)
    (run / "item_ids.json").unlink()
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.dataset.root = "missing-data"
    cfg.dataset.reader = {"_target_": "recforge.data.readers.MovieLens100K", "path": "missing-data/ml-100k"}
    OmegaConf.save(cfg, run / "config.yaml")
    with pytest.raises(RecforgeError, match="pass --data-root"):
        load_model(run, ids="require")
    model = load_model(run, ids="try")  # serving internal ids still works
    assert model.item_ids is None and "--data-root" in str(model.item_ids_problem)


def test_dataset_paths_are_rerooted_or_taken_from_the_training_directory() -> None:
    cfg = OmegaConf.create({"paths": {"root_dir": "/work/main"}, "dataset": {
        "root": "../shared/data", "max_len": 50,
        "reader": {"_target_": "x.Reader", "path": "../shared/data/s3rec/Beauty.txt",
                   "attributes_path": "../shared/data/s3rec/Beauty_item2attributes.json", "download": False}}})
    moved = dataset_config(cfg, "/data")
    assert moved.root == "/data" and moved.reader.path == "/data/s3rec/Beauty.txt"
    assert moved.reader.attributes_path == "/data/s3rec/Beauty_item2attributes.json"
    assert dataset_config(cfg).reader.path == "/work/main/../shared/data/s3rec/Beauty.txt"
    assert dataset_config(cfg).reader.download is False and dataset_config(cfg).max_len == 50


def test_checkpoint_of_another_catalogue_size_is_a_user_error(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "item_ids.json").unlink()
    (run / "dataset_stats.json").write_text(json.dumps({"items": 40}))
    with pytest.raises(RecforgeError, match="does not fit the model .* with 40 items .*shape of"):
        load_model(run, ids="file")

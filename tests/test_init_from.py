"""init_from: item rows copied by raw id (old rows exactly, new rows fresh), the config keys composed and
instantiated, and a real continuation of a finished run on the events after a time cut."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from recforge.run.build import build, item_id_map
from recforge.run.checkpoints import load_checkpoint
from recforge.run.init_from import load_earlier_weights, remap_item_rows
from recforge.run.load import find_checkpoint
from recforge.run.validate import validate_config

START = 1_600_000_000  # the synthetic reader's t-th event of a user is t hours after it
TINY = ["dataset.reader.num_users=60", "dataset.reader.num_items=150", "dataset.reader.min_length=8",
        "dataset.reader.max_length=14", "dataset.max_len=8", "hidden_size=16", "trainer.max_epochs=1",
        "logger=csv", "callbacks.progress_bar=null"]


def test_the_extended_map_keeps_old_rows_exactly_and_new_rows_fresh() -> None:
    # emb: 3 items + padding + a [MASK] row (IdEmbedding's N + 2 rows); bias: N + 1 rows
    old = {"emb.weight": torch.arange(10.0).reshape(5, 2), "bias": torch.tensor([9.0, 8.0, 7.0, 6.0]),
           "layer.weight": torch.ones(3, 2)}
    fresh = {"emb.weight": torch.full((7, 2), -1.0), "bias": torch.zeros(6), "layer.weight": torch.zeros(3, 2)}
    merged = remap_item_rows(old, fresh, ["", "a", "b", "c"], ["", "a", "b", "c", "d", "e"])
    expected = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7], [-1, -1], [-1, -1], [8, 9.0]])  # old rows, 2 fresh, mask
    torch.testing.assert_close(merged["emb.weight"], expected, rtol=0, atol=0)
    torch.testing.assert_close(merged["bias"], torch.tensor([9.0, 8.0, 7.0, 6.0, 0.0, 0.0]), rtol=0, atol=0)
    assert torch.equal(merged["layer.weight"], torch.ones(3, 2))  # not item-indexed: the earlier run's
    assert torch.equal(fresh["emb.weight"], torch.full((7, 2), -1.0))  # the target is not modified


def test_rows_follow_raw_ids_when_the_maps_differ() -> None:
    old = {"emb.weight": torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])}
    merged = remap_item_rows(old, {"emb.weight": torch.full((5, 1), -1.0)}, ["", "a", "b", "c"], ["", "c", "x", "a"])
    assert merged["emb.weight"].flatten().tolist() == [0.0, 3.0, -1.0, 1.0, 4.0]


def test_init_from_and_the_cuts_compose_validate_and_instantiate(compose_train) -> None:
    cfg = compose_train("init_from=outputs/runs/earlier", f"dataset.since={START}", f"dataset.until={START + 9}")
    validate_config(cfg)
    datamodule = instantiate(cfg.dataset)
    assert (cfg.init_from, datamodule.since, datamodule.until) == ("outputs/runs/earlier", START, START + 9)
    assert compose_train().init_from is None and compose_train().dataset.since is None


def run_train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECFORGE_CACHE": str(cwd / "cache")}
    return subprocess.run([str(Path(sys.executable).with_name("recforge-train")), *TINY, *overrides], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_finished_run_continues_on_the_events_after_the_cut(tmp_path: Path, compose_train) -> None:
    cut = START + 5 * 3600
    done = run_train(tmp_path, f"dataset.until={cut}", f"hydra.run.dir={tmp_path / 'before'}")
    assert done.returncode == 0, done.stderr[-2000:]
    before = json.loads((tmp_path / "before" / "item_ids.json").read_text())["item_ids"]
    old_state = load_checkpoint(find_checkpoint(tmp_path / "before", "best"))["state_dict"]

    cfg = compose_train(*TINY, f"init_from={tmp_path / 'before'}", f"dataset.since={cut}")
    torch.manual_seed(0)
    datamodule, module = build(cfg)
    ids = item_id_map(datamodule)["item_ids"]
    name = "encoder.item_embedder.table.weight"  # (N+2, H): padding, items, [MASK]
    fresh = module.state_dict()[name].clone()
    load_earlier_weights(cfg, module, item_id_map(datamodule))
    table = module.state_dict()[name]
    assert ids[:len(before)] == before and len(ids) > len(before)  # old ids kept, new items after them
    assert torch.equal(table[:len(before)], old_state[name][:len(before)])  # old rows exactly
    assert torch.equal(table[len(before):-1], fresh[len(before):-1])  # new items: fresh rows
    assert torch.equal(table[-1], old_state[name][-1])
    assert all(torch.equal(value, old_state[name]) for name, value in module.state_dict().items()
               if value.shape == old_state[name].shape and not name.startswith("encoder.item_embedder"))

    done = run_train(tmp_path, f"init_from={tmp_path / 'before'}", f"dataset.since={cut}",
                     f"hydra.run.dir={tmp_path / 'after'}")
    assert done.returncode == 0, done.stderr[-2000:]
    after = json.loads((tmp_path / "after" / "item_ids.json").read_text())["item_ids"]
    stats = json.loads((tmp_path / "after" / "dataset_stats.json").read_text())
    assert after == ids and stats["new_items"] == len(ids) - len(before)
    assert "ndcg@10" in json.loads((tmp_path / "after" / "metrics.json").read_text())["test"]


def test_init_from_a_folder_without_a_run_is_one_sentence(tmp_path: Path) -> None:
    done = run_train(tmp_path, f"init_from={tmp_path}", f"hydra.run.dir={tmp_path / 'x'}")
    assert done.returncode != 0
    assert f"init_from={tmp_path}: {tmp_path / 'item_ids.json'} is missing" in done.stderr
    assert not (tmp_path / "x" / "config.yaml").exists()


def test_a_since_after_every_training_event_is_one_sentence(tmp_path: Path) -> None:
    cut = START + 10**6 * 3600  # long after the last event of every user
    done = run_train(tmp_path, f"dataset.since={cut}", f"hydra.run.dir={tmp_path / 'x'}")
    assert done.returncode == 2
    assert (f"dataset.since={cut}: dataset 'synthetic' has no training event from the cut on (the training part ends "
            "at the validation cut); move the cut earlier.") in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x" / "config.yaml").exists()


def test_an_until_before_every_event_is_one_sentence(tmp_path: Path) -> None:
    done = run_train(tmp_path, f"dataset.until={START - 1}", f"hydra.run.dir={tmp_path / 'x'}")
    assert done.returncode == 2
    assert f"dataset.until={START - 1}: dataset 'synthetic' has no event before the cut." in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x" / "config.yaml").exists()

"""Bad input through the real console scripts: data files, checkpoints and caches.

Each user error must end in exactly one line ``recforge: error: <one sentence>`` naming the file (absolute
path), the line or column and what was expected; exit status 2; no traceback; nothing half-written (no run
directory, no cache file). Many variants of one code path are tested in-process in tests/data/; here one
console-script test per category, plus the in-process checkpoint tests (checkpoints.py has no other test file).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from recforge.data.datamodule import _load_cache
from recforge.errors import RecforgeError
from recforge.run.checkpoints import (
    check_checkpoint,
    load_checkpoint,
    state_dict_mismatch,
)
from recforge.run.load import load_weights

BIN = Path(sys.executable).parent
TINY = ["trainer.max_epochs=1", "dataset.max_len=10", "hidden_size=16", "logger=csv"]


def run(cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """A console script in ``cwd``, caching into ``cwd/cache``, one OpenMP thread."""
    env = {**os.environ, "RECFORGE_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("RECFORGE_DATA", None)
    return subprocess.run([str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def train(cwd: Path, *args: str, run_dir: str = "run") -> subprocess.CompletedProcess:
    """recforge-train in ``cwd`` writing its run to ``cwd/<run_dir>``."""
    return run(cwd, "recforge-train", *args, "callbacks.progress_bar=null", f"hydra.run.dir={cwd / run_dir}")


def user_error(proc: subprocess.CompletedProcess, tmp_path: Path) -> str:
    """The one-sentence message of a clean user error: status 2, no traceback, no run dir, no cache file."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists(), sorted(str(p) for p in (tmp_path / "run").rglob("*"))
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == [], list(cache.iterdir())
    lines = [line for line in proc.stderr.splitlines() if line.startswith("recforge: error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0].removeprefix("recforge: error: ")


def events(users: int = 40, per_user: int = 8, sep: str = ",") -> list[str]:
    """A header and ``users`` x ``per_user`` interactions over 20 items: passes the default 5-core filter."""
    rows = [sep.join(["user_id", "item_id", "timestamp"])]
    for u in range(users):
        rows += [sep.join([f"u{u}", f"i{(3 * u + 7 * t) % 20}", str(1_600_000_000 + 60 * t)]) for t in range(per_user)]
    return rows


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))  # no lines: a 0-byte file
    return path.resolve()


def csv_dataset(path: Path, *args: str) -> list[str]:
    return ["dataset=csv", f"dataset.reader.path={path}", *args]


# ------------------------------------------------------------------------------- data files


def test_empty_data_file(tmp_path):
    path = write_lines(tmp_path / "events.csv", [])
    message = user_error(train(tmp_path, *csv_dataset(path)), tmp_path)
    assert message == f"{path} is empty (expected a header row and data rows)"


def test_tsv_read_as_csv_names_the_delimiter_and_columns(tmp_path):
    path = write_lines(tmp_path / "events.tsv", events(sep="\t"))
    message = user_error(train(tmp_path, *csv_dataset(path)), tmp_path)
    assert message == (
        f"{path} has only 1 column 'user_id\\titem_id\\ttimestamp' when split with sep ',', expected columns "
        "user_col 'user_id', item_col 'item_id', time_col 'timestamp'; it looks '\\t'-separated, so set "
        "dataset.reader.sep='\\t'"
    )


def test_misnamed_columns_name_expected_and_present(tmp_path):
    path = write_lines(tmp_path / "events.csv", ["user,item_id,time", "u1,i1,1"])
    message = user_error(train(tmp_path, *csv_dataset(path)), tmp_path)
    assert message == (
        f"{path} has no columns 'user_id', 'timestamp' (expected user_col 'user_id', item_col 'item_id', time_col "
        "'timestamp'; found columns 'user', 'item_id', 'time'); set dataset.reader.user_col, "
        "dataset.reader.time_col to the file's column names"
    )


def test_mixed_types_in_a_column_name_the_first_bad_line(tmp_path):
    """Epoch seconds, then a date: the date's line is named (blank lines count in line numbers). Values that are
    neither, e.g. 'yesterday', take the same path (tests/data/test_readers.py)."""
    lines = events()
    lines[3:3] = ["", "   "]
    lines[9] = "u0,i9,2020-09-13T12:26:40"
    path = write_lines(tmp_path / "events.csv", lines)
    message = user_error(train(tmp_path, *csv_dataset(path)), tmp_path)
    assert message == (
        f"{path}: line 10 has a date '2020-09-13T12:26:40' in column 'timestamp' while line 2 has epoch seconds "
        "'1600000000', expected one kind throughout (all epoch seconds or all ISO dates)"
    )


def test_non_integer_id_in_s3rec_file(tmp_path):
    path = write_lines(tmp_path / "data" / "s3rec" / "Beauty.txt", ["1 1 2 3", "2 2 3 4", "3 3 B004 5"])
    message = user_error(train(tmp_path, "dataset=beauty", f"dataset.root={tmp_path / 'data'}"), tmp_path)
    assert message == (
        f"{path}: line 3 has the non-integer token 'B004' (expected 'user item1 item2 ...' of integer ids): "
        "'3 3 B004 5'"
    )


def test_attribute_json_that_does_not_parse(tmp_path):
    folder = tmp_path / "data" / "s3rec"
    write_lines(folder / "Beauty.txt", ["1 1 2 3", "2 2 3 4"])
    attrs = write_lines(folder / "Beauty_item2attributes.json", ['{"1": [1, 2],', ' "2": [3,, 4]}'])
    message = user_error(train(tmp_path, "dataset=beauty", f"dataset.root={tmp_path / 'data'}"), tmp_path)
    assert message == f"{attrs} is not valid JSON at line 2 column 10 (Expecting value)"


def test_filtering_that_empties_the_dataset_names_dataset_and_settings(tmp_path):
    path = write_lines(tmp_path / "events.csv", events(users=30, per_user=4))
    message = user_error(train(tmp_path, *csv_dataset(path)), tmp_path)
    assert message == (
        f"dataset 'csv': filtering removed all 120 interactions read from {path} (dataset.min_rating=None, "
        "dataset.user_k=5, dataset.item_k=5: every user needs at least 5 and every item at least 5 interactions); "
        "lower these values."
    )


def test_blank_item_text_column_is_named(tmp_path):
    path = write_lines(tmp_path / "events.csv", events())
    items = write_lines(tmp_path / "items.csv", ["item_id,title"] + [f"i{i}, " for i in range(20)])
    message = user_error(train(tmp_path, *csv_dataset(path), f"+dataset.reader.item_text_path={items}"), tmp_path)
    assert message == (
        f"{items}: text column 'title' is blank in every row, expected item text (set dataset.reader.item_text_cols "
        "to the columns that hold it)"
    )


@pytest.fixture(scope="module")
def tsv_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished one-epoch run on the TSV of the delimiter test, read with the sep its message suggests, with
    blank lines and 3 exact duplicate rows (its cache in <base>/cache). Shared by the checkpoint and cache tests."""
    base = tmp_path_factory.mktemp("tsv")
    lines = events(sep="\t")
    lines[5:5] = ["", "  "]
    lines += [lines[1], lines[2], lines[-1]]
    path = write_lines(base / "events.tsv", lines)
    proc = train(base, *csv_dataset(path, "dataset.reader.sep='\\t'"), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, proc


def test_blank_lines_skipped_and_duplicates_counted(tsv_run):
    base, proc = tsv_run
    stats = json.loads((base / "run" / "dataset_stats.json").read_text())
    assert {k: stats[k] for k in ("users", "items", "interactions", "duplicates_removed")} == {
        "users": 40, "items": 20, "interactions": 320, "duplicates_removed": 3}
    assert "dataset csv: removed 3 duplicate interactions (same user, item and timestamp)" in proc.stdout


# ------------------------------------------------------------------------------- checkpoints


def _eval_error(run_dir: Path, checkpoint: Path) -> str:
    """recforge-eval with a bad checkpoint: status 2, one line, no traceback, no eval directory left."""
    proc = run(run_dir.parent, "recforge-eval", f"run_dir={run_dir}", f"checkpoint={checkpoint}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not any((run_dir / "eval").glob("*"))  # the fresh eval/<time> directory was removed
    lines = [line for line in proc.stderr.splitlines() if line.startswith("recforge: error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0].removeprefix("recforge: error: ")


def test_eval_with_a_truncated_checkpoint(tsv_run):
    base, _ = tsv_run
    good = (base / "run" / "checkpoints" / "last.ckpt").read_bytes()
    truncated = base / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    assert _eval_error(base / "run", truncated) == (
        f"checkpoint {truncated.resolve()} could not be read (RuntimeError); it is damaged, truncated or not a "
        "recforge checkpoint."
    )


def test_real_checkpoint_loads_and_random_bytes_do_not(tsv_run, tmp_path):
    base, _ = tsv_run
    path = base / "run" / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 0 and all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
    assert check_checkpoint(str(path)) is None  # complete: training can continue from it
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(RecforgeError) as info:
        load_checkpoint(noise)
    assert str(info.value) == (
        f"checkpoint {noise.resolve()} could not be read (UnpicklingError); it is damaged, truncated or not a "
        "recforge checkpoint."
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "EOFError"),
        (b"hello world\n", "KeyError"),
        ("list", "it holds a list, not a dict"),
        ("no_state", "no 'state_dict' entry"),
        ("bad_state", "its 'state_dict' holds entries that are not named tensors"),
    ],
)
def test_load_checkpoint_failures_name_the_file(tmp_path, content, reason):
    path = tmp_path / "model.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        obj = {"list": [1, 2], "no_state": {"epoch": 3}, "bad_state": {"state_dict": {"w": 1.0}}}[content]
        torch.save(obj, path)
    with pytest.raises(RecforgeError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"checkpoint {path.resolve()} could not be read ({reason}); it is damaged, truncated or not a recforge "
        "checkpoint."
    )


def test_load_checkpoint_missing_file_or_directory(tmp_path):
    with pytest.raises(RecforgeError) as info:
        load_checkpoint(tmp_path / "nope.ckpt")
    assert str(info.value) == (
        f"checkpoint {(tmp_path / 'nope.ckpt').resolve()} does not exist; expected a .ckpt file written by "
        "recforge-train."
    )
    with pytest.raises(RecforgeError, match="is a directory; expected a .ckpt file"):
        load_checkpoint(tmp_path)


def test_check_checkpoint_rejects_weights_without_training_state(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": OrderedDict(w=torch.zeros(2)), "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1  # enough to evaluate or export
    with pytest.raises(RecforgeError) as info:
        check_checkpoint(path)  # not enough to continue training
    assert str(info.value) == (
        f"checkpoint {path.resolve()} holds model weights but no training state (global_step, loops, "
        "optimizer_states, lr_schedulers missing), so training cannot continue from it; pass a checkpoint written "
        "by recforge-train such as checkpoints/last.ckpt."
    )


def test_checkpoint_of_another_model_is_a_user_error(tmp_path):
    model = torch.nn.Linear(2, 3)
    other = {"weight": torch.zeros(4, 2), "bias": torch.zeros(4), "extra": torch.zeros(1)}
    assert state_dict_mismatch(model.state_dict(), other) == (
        "unexpected extra; shape of weight (4, 2) vs (3, 2), bias (4,) vs (3,)")
    assert state_dict_mismatch(model.state_dict(), dict(model.state_dict())) is None
    with pytest.raises(RecforgeError) as info:
        load_weights(model, {"weight": torch.zeros(3, 2)}, tmp_path / "a.ckpt", tmp_path)
    assert str(info.value) == (
        f"checkpoint {(tmp_path / 'a.ckpt').resolve()} does not fit the model configured in "
        f"{(tmp_path / 'config.yaml').resolve()} (missing bias); pass a checkpoint written by this run."
    )


# ------------------------------------------------------------------------------------ caches


def test_damaged_cache_is_rebuilt_with_a_warning_and_the_same_statistics(tsv_run):
    base, _ = tsv_run
    (cache,) = sorted((base / "cache").glob("*.npz"))
    before = json.loads((base / "run" / "dataset_stats.json").read_text())
    raw = cache.read_bytes()
    cache.write_bytes(raw[: len(raw) * 2 // 3])  # truncated mid-file, as by a full disk or a killed copy
    again = base / "again"
    path = base / "events.tsv"
    proc = train(base, *csv_dataset(path, "dataset.reader.sep='\\t'"), *TINY, run_dir="again")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"dataset cache {cache} is damaged (" in proc.stdout and "); rebuilding it" in proc.stdout
    assert json.loads((again / "dataset_stats.json").read_text()) == before
    seqs, removed = _load_cache(cache)  # rewritten whole (atomically), and consistent again
    assert removed == before["duplicates_removed"] == 3
    assert (seqs.num_users, seqs.num_items, len(seqs.items)) == (40, 20, 320) == (
        before["users"], before["items"], before["interactions"])
    assert sorted(p.name for p in (base / "cache").iterdir()) == [cache.name]  # no temp file left

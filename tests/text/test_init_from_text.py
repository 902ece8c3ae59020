"""init_from with a text item embedder: an item first seen after the cut gets its vector from its own text through
the earlier run's trained projection (no fresh random row), and the earlier items keep theirs exactly."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from recforge.models.text_encoder import TextEncoder
from recforge.run.build import build, item_id_map
from recforge.run.checkpoints import load_checkpoint
from recforge.run.init_from import load_earlier_weights
from recforge.run.load import find_checkpoint
from tests.test_init_from import START, TINY
from tests.text.conftest import text_encoder_override

TEXT = ["item_embedder=text", "item_text.template='{category}: {title}'"]


def test_new_items_take_their_text_through_the_earlier_projection(tmp_path: Path, compose_train) -> None:
    cut = START + 5 * 3600
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECFORGE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([str(Path(sys.executable).with_name("recforge-train")), text_encoder_override(), *TINY,
                           *TEXT, f"dataset.until={cut}", f"hydra.run.dir={tmp_path / 'before'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    old = load_checkpoint(find_checkpoint(tmp_path / "before", "best"))["state_dict"]

    cfg = compose_train(text_encoder_override(), *TINY, *TEXT, f"init_from={tmp_path / 'before'}",
                        f"dataset.since={cut}")
    datamodule, module = build(cfg)  # attaches every item's text, the new items' too
    load_earlier_weights(cfg, module, item_id_map(datamodule))
    ids = [str(i) for i in item_id_map(datamodule)["item_ids"]]
    known = len(old["encoder.item_embedder.text.table"]) - 2  # earlier items (the table has padding and [MASK])
    assert len(ids) > known + 1

    frame = datamodule.reader.item_text().set_index("item")
    texts = [f"{frame.loc[raw, 'category']}: {frame.loc[raw, 'title']}" for raw in ids[known + 1:]]
    text = TextEncoder(max_length=128).encode(texts, progress=False)  # (new, 384): the new items' own texts
    weight, bias = old["encoder.item_embedder.project.weight"], old["encoder.item_embedder.project.bias"]
    embedder = module.encoder.item_embedder
    with torch.no_grad():
        rows = embedder.output_weights()  # (N+1, H)
    torch.testing.assert_close(rows[known + 1:], text @ weight.T + bias, atol=1e-5, rtol=1e-4)  # trained projection
    assert torch.equal(embedder.project.weight, weight)  # not a fresh one
    table = embedder.text.table
    torch.testing.assert_close(table[:known + 1], old["encoder.item_embedder.text.table"][:known + 1], atol=0, rtol=0)

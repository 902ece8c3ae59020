"""recforge-export: TorchScript and ONNX exports score exactly like the Lightning model (int8: closely)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from recforge.data.datamodule import TrainingData
from recforge.deploy.export import (
    example_items,
    export_onnx,
    export_torchscript,
    int8_model,
    load_export,
    main,
)
from recforge.deploy.model import Scorer
from recforge.run.build import build_module

KINDS = {"torchscript": ("torchscript", None), "onnx": ("onnx", None),
         "torchscript-int8": ("torchscript", "int8"), "onnx-int8": ("onnx", "int8")}


@pytest.fixture(scope="module")
def exports(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every format x quantization, written by the command's main()."""
    out = tmp_path_factory.mktemp("exports")
    paths = {}
    for kind, (fmt, quantize) in KINDS.items():
        path = out / f"model-{kind}{'.onnx' if fmt == 'onnx' else '.pt'}"
        main([str(tiny_run), "--format", fmt, "--out", str(path), *(["--quantize", quantize] if quantize else [])])
        paths[kind] = path
    return paths


def top_overlap(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """Mean share of the top-k items of ``a`` that are in the top-k of ``b``, over rows."""
    ta, tb = a.topk(k).indices.tolist(), b.topk(k).indices.tolist()
    return sum(len(set(x) & set(y)) for x, y in zip(ta, tb)) / (k * len(ta))


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
@pytest.mark.parametrize("batch", [1, 7])
def test_fp32_export_equals_lightning_score(exports, lightning_module, histories, kind: str, batch: int) -> None:
    items = histories(batch, seed=batch)
    with torch.inference_mode():
        expected = lightning_module.score(items)  # (B, N+1)
    got = load_export(exports[kind])(items)
    assert got.dtype == torch.float32 and got.shape == (batch, 60)
    assert torch.isneginf(got[:, 0]).all()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["torchscript-int8", "onnx-int8"])
@pytest.mark.parametrize("batch", [1, 7])
def test_int8_export_is_close_and_keeps_the_top10(exports, lightning_module, histories, kind: str, batch: int) -> None:
    items = histories(batch, seed=batch)
    with torch.inference_mode():
        expected = lightning_module.score(items)[:, 1:]  # (B, N)
    got = load_export(exports[kind])(items)[:, 1:]
    spread = float(expected.max() - expected.min())
    assert float((got - expected).abs().max()) < 0.05 * spread  # int8 moves scores a little, never far
    assert not torch.equal(got, expected)  # really quantized
    assert top_overlap(expected, got) >= 0.8


def test_int8_files_hold_int8_weights(exports) -> None:
    import onnx

    graph = onnx.load(str(exports["onnx-int8"])).graph
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {node.op_type for node in graph.node}
    code = torch.jit.load(str(exports["torchscript-int8"])).inlined_graph
    assert "quantized::linear_dynamic" in str(code) and "quantized::embedding_byte" in str(code)


@pytest.mark.parametrize("kind", list(KINDS))
def test_sidecar_describes_the_export(exports, tiny_run: Path, kind: str) -> None:
    path = exports[kind]
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    ids = json.loads((tiny_run / "item_ids.json").read_text())["item_ids"]
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (meta["format"], meta["quantized"]) == KINDS[kind]
    assert (meta["max_len"], meta["num_items"], meta["item_ids"]) == (10, 59, ids)
    assert meta["input"]["shape"] == ["batch", 10] and meta["output"]["shape"] == ["batch", 60]
    assert meta["source_checkpoint"] == str((tiny_run / "checkpoints" / "epoch001.ckpt").resolve())
    assert meta["check"]["top10_overlap"] >= (1.0 if meta["quantized"] is None else 0.8)
    assert meta["check"]["max_abs_diff"] < (1e-5 if meta["quantized"] is None else 0.05)


def test_default_output_goes_to_the_runs_export_folder(tiny_run: Path, capsys) -> None:
    main([str(tiny_run / "checkpoints" / "last.ckpt"), "--format", "torchscript"])
    path = tiny_run / "export" / "last.pt"
    assert path.is_file() and (tiny_run / "export" / "last.pt.json").is_file()
    assert capsys.readouterr().out.startswith(f"wrote {path}")


def test_missing_checkpoint_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope.ckpt"), "--format", "onnx"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recforge: error:") and "nope.ckpt" in err and "\n" not in err


def encoder_scorer(compose_train, encoder: str) -> Scorer:
    """An untrained model of each encoder (random weights; popularity with made-up counts) as a scorer."""
    module = build_module(compose_train(f"encoder={encoder}", "hidden_size=16", "dataset.max_len=10"), 30).eval()
    if encoder == "popularity":
        module.decoder.fit_data(TrainingData.from_counts(torch.arange(31).float()))
    return Scorer(module.encoder, module.decoder).eval()


def assert_export_matches(scorer: Scorer, exporter, path: Path) -> None:
    exporter(scorer, example_items(10, 30), path)
    run = load_export(path)
    for batch in (1, 7):
        items = example_items(10, 30, batch, seed=batch)
        with torch.no_grad():
            torch.testing.assert_close(run(items), scorer(items), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder", ["sasrec", "bert4rec", "gru4rec", "popularity"])
def test_every_encoder_exports_to_torchscript(compose_train, tmp_path: Path, encoder: str) -> None:
    scorer = encoder_scorer(compose_train, encoder)
    assert_export_matches(scorer, export_torchscript, tmp_path / "model.pt")
    export_torchscript(int8_model(scorer), example_items(10, 30), tmp_path / "int8.pt")
    scores = load_export(tmp_path / "int8.pt")(example_items(10, 30, 7))
    assert scores.shape == (7, 31) and torch.isneginf(scores[:, 0]).all() and scores[:, 1:].isfinite().all()


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["bert4rec", "gru4rec", "popularity"])
def test_every_encoder_exports_to_onnx(compose_train, tmp_path: Path, encoder: str) -> None:
    assert_export_matches(encoder_scorer(compose_train, encoder), export_onnx, tmp_path / "model.onnx")

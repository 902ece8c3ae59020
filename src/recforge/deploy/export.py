"""recforge-export: a run's scoring path as a TorchScript or ONNX file (optionally int8), with a JSON sidecar.

The export takes ``items`` (B, L) int64, left-padded internal item ids (0 = padding, L = the run's max_len), and
returns ``scores`` (B, N+1) float32 (column 0, padding, is -inf); the batch size B is free. The sidecar
``<file>.json`` holds max_len, num_items, the raw id of every internal id, the source checkpoint, the export's
sha256 and a check of the export against the checkpoint's model on random histories.

int8: dynamic quantization (int8 weights, activations quantized per batch) of the linear layers, including the item
scoring (a tied dot-product decoder becomes a linear layer over a copy of the item table first), and int8 embedding
tables (TorchScript: torch.ao dynamic + weight-only embedding quantization; ONNX: onnxruntime's quantize_dynamic).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from recforge.deploy.model import DeployedModel, load_model
from recforge.errors import RecforgeError
from recforge.models.decoders import DotProduct
from recforge.run.cli import user_errors
from recforge.run.records import write_json

SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 20  # the dynamo exporter's default in torch 2.13; onnxruntime >= 1.17 runs it


class LinearScores(nn.Module):
    """DotProduct's scores through an nn.Linear holding a copy of the item table, so int8 quantization reaches it."""

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weights.shape[1], weights.shape[0], bias=False)  # H -> N+1
        with torch.no_grad():
            self.linear.weight.copy_(weights)  # (N+1, H)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (M, H) -> scores (M, N+1), padding at -inf."""
        scores = self.linear(hidden)  # (M, N+1)
        scores[:, 0] = float("-inf")
        return scores


def int8_model(model: nn.Module) -> nn.Module:
    """A copy of the scorer with int8 weights: every nn.Linear dynamically quantized (int8 kernels, activations
    quantized per batch) and every nn.Embedding weight-only quantized (int8 rows, per-row scale).

    ``torch.ao.quantization.quantize_dynamic`` is deprecated in favour of torchao's ``quantize_``, but torchao's
    tensor-subclass weights cannot be traced into TorchScript; this is the only int8 path TorchScript has.
    """
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
    )

    model = copy.deepcopy(model).eval()
    if isinstance(getattr(model, "decoder", None), DotProduct):
        model.decoder = LinearScores(model.decoder.item_embedder.output_weights().detach())
    spec = {nn.Linear: default_dynamic_qconfig, nn.Embedding: float_qparams_weight_only_qconfig}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notices above
        model = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.ao.nn.quantized.Embedding):
                setattr(parent, name, ContiguousIds(child))
    return model


class ContiguousIds(nn.Module):
    """A quantized embedding needs contiguous ids (BERT4Rec's input is a slice); a no-op for the others."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, items: Tensor) -> Tensor:
        """items: (...,) ids -> (..., H)."""
        return self.embedding(items.contiguous())


def example_items(max_len: int, num_items: int, batch: int = 2, seed: int = 0) -> Tensor:
    """Random histories (B, L) whose even rows are left-padded to a random length (some all padding)."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, num_items + 1, (batch, max_len), generator=g)  # (B, L)
    lengths = torch.randint(0, max_len + 1, (batch,), generator=g)  # (B,)
    padded = (torch.arange(max_len)[None, :] < (max_len - lengths)[:, None]) & (torch.arange(batch)[:, None] % 2 == 0)
    return items.masked_fill(padded, 0)


@contextmanager
def no_transformer_fastpath(model: nn.Module) -> Iterator[None]:
    """Switch off nn.TransformerEncoderLayer's fused inference path for a quantized model: its eligibility check
    reads ``linear.weight`` as a tensor, which a quantized linear layer has only as a method."""
    quantized = any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(before and not quantized)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def export_torchscript(model: nn.Module, example: Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings(), no_transformer_fastpath(model):
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; still supported
        traced = torch.jit.trace(model, example)
        traced.save(str(path))


def export_onnx(model: nn.Module, example: Tensor, path: Path) -> None:
    """The dynamo exporter (torch.export graph; the legacy one emits EyeLike on booleans, which onnxruntime
    lacks), then the per-node debug metadata (source stack traces, most of a small model's file) removed."""
    import onnx

    batch = torch.export.Dim("batch")
    with torch.no_grad(), warnings.catch_warnings(), redirect_stdout(sys.stderr), quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), input_names=["items"], output_names=["scores"],
                                    dynamo=True, dynamic_shapes={"items": {0: batch}}, opset_version=ONNX_OPSET,
                                    verbose=False)
    graph = onnx.load_from_string(program.model_proto.SerializeToString())  # type: ignore[union-attr]
    for node in graph.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in [*graph.graph.input, *graph.graph.output, *graph.graph.value_info]:
        del value.metadata_props[:]
    onnx.save(graph, str(path))


def quantize_onnx(source: Path, path: Path) -> None:
    """onnxruntime's dynamic int8 quantization (MatMul and Gather weights -> int8) after its recommended
    pre-processing (shape inference and graph optimisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = source.with_name("prepared.onnx")
    with redirect_stdout(sys.stderr):
        quant_pre_process(str(source), str(prepared))
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8)


@contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Only errors from ``logger`` (the ONNX exporter notes every torchvision operator it skips)."""
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(before)


def load_export(path: str | Path, threads: int | None = None) -> Callable[[Tensor], Tensor]:
    """Run an exported file like the scorer: items (B, L) int64 -> scores (B, N+1) float32."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda items: torch.from_numpy(session.run(["scores"], {"items": items.numpy()})[0])
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(items: Tensor) -> Tensor:
        with torch.inference_mode():
            return module(items)

    return run


def check_export(model: DeployedModel, path: Path, batch: int = 7, k: int = 10) -> dict[str, float]:
    """The export against the checkpoint's model on random histories: largest score difference, top-k overlap."""
    items = example_items(model.max_len, model.num_items, batch, seed=1)
    with torch.inference_mode():
        expected = model.scorer(items)[:, 1:]  # (B, N)
    got = load_export(path)(items)[:, 1:]  # (B, N)
    k = min(k, model.num_items)
    top_e, top_g = expected.topk(k).indices, got.topk(k).indices  # (B, k)
    overlap = sum(len(set(a) & set(b)) for a, b in zip(top_e.tolist(), top_g.tolist())) / (k * batch)
    return {"batch": batch, "max_abs_diff": float((expected - got).abs().max()), f"top{k}_overlap": overlap}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar(model: DeployedModel, path: Path, fmt: str, quantize: str | None) -> dict[str, Any]:
    """What a runtime needs besides the file: shapes, the id map, provenance and a parity check."""
    ids = model.item_ids
    return {
        "file": path.name, "format": fmt, "quantized": quantize, "sha256": sha256(path),
        "input": {"name": "items", "dtype": "int64", "shape": ["batch", model.max_len],
                  "meaning": "most recent internal item ids, oldest first, left-padded with 0"},
        "output": {"name": "scores", "dtype": "float32", "shape": ["batch", model.num_items + 1],
                   "meaning": "score of every internal item id; column 0 (padding) is -inf"},
        "max_len": model.max_len, "num_items": model.num_items, "dataset": model.dataset,
        "item_ids": ids.raw if ids else None, "item_ids_source": ids.source if ids else model.item_ids_problem,
        "source_checkpoint": str(model.checkpoint.resolve()), "check": check_export(model, path),
        "recforge_version": metadata.version("recforge"), "torch_version": torch.__version__,
        "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def default_out(model: DeployedModel, fmt: str, quantize: str | None) -> Path:
    """``<run>/export/<checkpoint name>[-int8].pt|.onnx``."""
    name = model.checkpoint.stem + (f"-{quantize}" if quantize else "") + SUFFIX[fmt]
    return model.run_dir / "export" / name


def export(model: DeployedModel, fmt: str, quantize: str | None, out: Path) -> Path:
    """Write the export atomically (temporary file, then rename) and its sidecar ``<out>.json``; returns ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scorer = int8_model(model.scorer) if quantize == "int8" and fmt == "torchscript" else model.scorer
    example = example_items(model.max_len, model.num_items)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / out.name
        if fmt == "torchscript":
            export_torchscript(scorer, example, staged)
        elif quantize == "int8":
            export_onnx(scorer, example, Path(tmp) / "fp32.onnx")
            quantize_onnx(Path(tmp) / "fp32.onnx", staged)
        else:
            export_onnx(scorer, example, staged)
        os.replace(staged, out)
    write_json(out.with_name(out.name + ".json"), sidecar(model, out, fmt, quantize))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recforge-export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run directory (its best checkpoint) or a .ckpt file inside one")
    parser.add_argument("--format", required=True, choices=sorted(SUFFIX), help="torchscript or onnx")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 quantization")
    parser.add_argument("--out", type=Path, default=None,
                        help="the export file (default <run>/export/<checkpoint>[-int8].pt|.onnx)")
    parser.add_argument("--data-root", default=None,
                        help="data folder, to rebuild the id map of a run without item_ids.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with user_errors():
        model = load_model(args.checkpoint, ids="try", data_root=args.data_root)
        if args.out is not None and args.out.is_dir():
            raise RecforgeError(f"--out {args.out} is a directory; name the file to write, e.g. {args.out / ('model' + SUFFIX[args.format])}.")
        out = export(model, args.format, args.quantize, args.out or default_out(model, args.format, args.quantize))
        if model.item_ids is None:
            print(f"recforge: warning: no item id map in the sidecar ({model.item_ids_problem}).", file=sys.stderr)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.name}.json")


if __name__ == "__main__":
    main()

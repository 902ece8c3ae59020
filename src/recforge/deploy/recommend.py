"""recforge-recommend: top-K next items for JSON lines of histories, scored in batches.

Input, one JSON object per line: ``{"user": "u1", "history": [item ids, oldest first]}`` (blank lines are skipped).
Output, one line per input line, in order: ``{"user", "items", "scores", "unknown"}`` (+ ``"warning"`` when no
history item is known). A malformed line gets ``{"line": n, "user": ..., "error": "..."}`` in its place and the
others go on; the command then exits 2 and names the first failure on stderr. ``--index hnsw`` (or ivf, flat) takes
the top-K from a faiss inner-product index over the item table instead of scoring every item (large catalogues).
``--explain`` adds ``"explanations"``: for each recommended item, ``[{"item", "index", "attribution"}]`` over the
history items in the model's input, strongest first (``index``: the item's place in the given history), by
integrated gradients or, with ``--explain-method attention``, the last transformer layer's attention
(:mod:`recforge.deploy.explain`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from recforge.deploy.explain import EXPORT_SUFFIXES, METHODS, explain_problem
from recforge.deploy.index import add_index_arguments, build_index, index_spec
from recforge.deploy.model import load_model
from recforge.deploy.recommender import Encoded, Query, Recommender
from recforge.errors import RecforgeError
from recforge.run.cli import user_errors


@dataclass
class Line:
    """One input line: its number, its user, and its encoded history or the reason it failed."""

    number: int
    user: Any
    encoded: Encoded | None = None
    error: str | None = None


def parse_line(number: int, text: str, recommender: Recommender, raw_ids: bool) -> Line:
    """Decode and encode one JSON line; any problem becomes the line's error (naming the line)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return Line(number, None, error=f"line {number} is not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(record, dict):
        return Line(number, None, error=f"line {number} is a JSON {type(record).__name__}, expected an object with a \"history\" list")
    user = record.get("user")
    history = record.get("history")
    if not isinstance(history, list):
        got = "no \"history\" key" if "history" not in record else f"\"history\" is a {type(history).__name__}"
        return Line(number, user, error=f"line {number}: {got}, expected a list of item ids")
    try:
        return Line(number, user, encoded=recommender.encode(history, raw_ids))
    except (TypeError, ValueError) as exc:  # an id of the wrong type; raw ids without an id map
        return Line(number, user, error=f"line {number}: {exc}")


def read_lines(handle: IO[bytes], recommender: Recommender, raw_ids: bool) -> Iterator[Line]:
    """Lines are decoded one at a time, so a line that is not UTF-8 fails alone."""
    for number, data in enumerate(handle, start=1):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            yield Line(number, None, error=f"line {number} is not valid UTF-8 text")
            continue
        if text.strip():
            yield parse_line(number, text, recommender, raw_ids)


def answer_batch(lines: list[Line], recommender: Recommender, k: int, raw_ids: bool,
                 exclude_history: bool, explain: bool = False) -> list[dict[str, Any]]:
    """The output records of ``lines``, in order: answers for the good ones, error records for the rest."""
    queries = [Query(line.encoded, k, raw_ids, exclude_history, explain) for line in lines if line.encoded is not None]
    answers = iter(recommender.recommend(queries))
    records = []
    for line in lines:
        if line.error is not None:
            records.append({"line": line.number, "user": line.user, "error": line.error})
        else:
            records.append({"user": line.user, **next(answers)})
    return records


def run(recommender: Recommender, args: argparse.Namespace, source: IO[bytes], sink: IO[str]) -> list[str]:
    """Answer every line of ``source`` into ``sink``; returns the error messages of failed lines."""
    errors: list[str] = []
    batch: list[Line] = []
    for line in read_lines(source, recommender, args.raw_ids):
        batch.append(line)
        if len(batch) == args.batch_size:
            errors += _flush(batch, recommender, args, sink)
            batch = []
    errors += _flush(batch, recommender, args, sink)
    return errors


def _flush(batch: list[Line], recommender: Recommender, args: argparse.Namespace, sink: IO[str]) -> list[str]:
    for record in answer_batch(batch, recommender, args.k, args.raw_ids, not args.keep_history, args.explain):
        sink.write(json.dumps(record) + "\n")
    sink.flush()
    return [line.error for line in batch if line.error is not None]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recforge-recommend", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run directory (its best checkpoint) or a .ckpt file inside one")
    parser.add_argument("--k", type=int, default=10, help="how many items to recommend (default 10)")
    parser.add_argument("--input", default="-", help="JSON lines file of histories, '-' for stdin (default)")
    parser.add_argument("--output", default="-", help="where to write the answers, '-' for stdout (default)")
    parser.add_argument("--raw-ids", action="store_true", help="histories and answers use the dataset's raw ids")
    parser.add_argument("--keep-history", action="store_true", help="history items may be recommended again")
    parser.add_argument("--batch-size", type=int, default=256, help="histories scored at once (default 256)")
    parser.add_argument("--data-root", default=None,
                        help="data folder, to rebuild the id map of a run without item_ids.json (--raw-ids)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_index_arguments(parser)
    parser.add_argument("--explain", action="store_true",
                        help="for each recommended item, the history items that drove it, strongest first")
    parser.add_argument("--explain-method", choices=METHODS, default="ig",
                        help="ig: integrated gradients on the history's item embeddings (default); attention: the "
                             "last transformer layer's attention (SASRec, BERT4Rec)")
    parser.add_argument("--ig-steps", type=int, default=32, help="integrated gradients' steps (default 32)")
    args = parser.parse_args(argv)
    if args.k < 1 or args.batch_size < 1 or args.ig_steps < 1:
        parser.error(f"--k ({args.k}), --batch-size ({args.batch_size}) and --ig-steps ({args.ig_steps}) must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with user_errors(), ExitStack() as stack:
        if args.explain and Path(args.checkpoint).suffix in EXPORT_SUFFIXES:
            raise RecforgeError(f"--explain needs the run's PyTorch model (its run directory or a .ckpt file), not the exported file {args.checkpoint}; explanations take gradients through the eager model.")
        model = load_model(args.checkpoint, ids="require" if args.raw_ids else "file", data_root=args.data_root)
        problem = explain_problem(model.scorer, args.explain_method) if args.explain else None
        if problem is not None:
            raise RecforgeError(f"--explain: {problem}")
        recommender = Recommender(model, batch_size=args.batch_size,
                                  index=build_index(model.scorer.decoder, index_spec(args)),
                                  explain_method=args.explain_method, ig_steps=args.ig_steps)
        source = sys.stdin.buffer if args.input == "-" else stack.enter_context(_open(args.input, "rb"))
        sink = sys.stdout if args.output == "-" else stack.enter_context(_open(args.output, "w"))
        errors = run(recommender, args, source, sink)
        if errors:
            raise RecforgeError(f"{len(errors)} input line(s) failed, the first: {errors[0]}; each has an error record in the output.")


def _open(path: str, mode: str) -> IO[Any]:
    try:
        return open(path, mode) if "b" in mode else open(path, mode, encoding="utf-8")
    except OSError as exc:
        raise RecforgeError(f"{'--input' if 'r' in mode else '--output'} {path} could not be opened ({exc.strerror}).") from exc


if __name__ == "__main__":
    main()

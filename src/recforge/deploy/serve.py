"""recforge-serve: an HTTP server for a trained run's top-K recommendations (FastAPI + uvicorn).

``GET /health`` -> ``{"status": "ok", "model", "num_items", "max_len", "raw_ids"}``.
``POST /recommend`` ``{"history": [...], "k": 10, "raw_ids": false, "exclude_history": true}`` ->
``{"items", "scores", "unknown"}`` (+ ``"warning"`` when no history item is known): the answer recforge-recommend
gives for the same history. A request the model cannot answer as asked is a 422 naming the field and the reason.

The model is loaded once, before the port is opened. One scoring thread answers every request that is waiting
in a single model call (``torch.inference_mode()``, ``--threads`` torch threads, default 1), so concurrent
requests are batched and the event loop stays free for I/O and /health while the model runs.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from recforge.deploy.model import DeployedModel, load_model
from recforge.deploy.recommender import Query, Recommender
from recforge.errors import RecforgeError
from recforge.run.cli import user_errors

MAX_HISTORY = 10_000
log = logging.getLogger("recforge.serve")


class RecommendRequest(BaseModel):
    """A history, oldest first: internal ids (integers), or with ``raw_ids`` the dataset's raw ids."""

    model_config = ConfigDict(extra="forbid")

    history: list[StrictInt | StrictStr] = Field(max_length=MAX_HISTORY)
    k: StrictInt | None = Field(default=None, ge=1, description="default: the server's --k")
    raw_ids: StrictBool = False
    exclude_history: StrictBool = True

    @model_validator(mode="after")
    def _ids_in_one_space(self) -> RecommendRequest:
        if not self.raw_ids:
            strings = [i for i, item in enumerate(self.history) if isinstance(item, str)]
            if strings:
                i = strings[0]
                raise ValueError(f"history[{i}] = {self.history[i]!r} is a string but raw_ids is false; internal item ids are integers")
        return self


class Recommendation(BaseModel):
    items: list[int | str]
    scores: list[float]
    unknown: list[int | str]
    warning: str | None = None


class Health(BaseModel):
    status: str
    model: str
    num_items: int
    max_len: int
    raw_ids: bool


class Batcher:
    """Scores queued queries together: one model call for all that arrived while the previous call ran."""

    def __init__(self, recommender: Recommender, max_batch: int = 64) -> None:
        self.recommender, self.max_batch = recommender, max_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recforge-score")
        self.queue: asyncio.Queue[tuple[Query, asyncio.Future[dict[str, Any]]]] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, query: Query) -> dict[str, Any]:
        assert self.queue is not None, "Batcher.start() runs at application startup"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self.queue.put((query, future))
        return await future

    async def _run(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                answers = await loop.run_in_executor(self.executor, self.recommender.recommend, [q for q, _ in batch])
            except Exception as exc:  # noqa: BLE001 - a bug fails the requests of this batch (500), not the server
                answers = [exc] * len(batch)  # type: ignore[list-item]
            for (_, future), answer in zip(batch, answers):
                if future.done():  # the client went away
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)


def invalid(field: str, message: str, value: Any) -> RequestValidationError:
    """A 422 in FastAPI's own format, for checks that need the model (catalogue size, id map)."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}])


def create_app(model: DeployedModel, default_k: int = 10) -> FastAPI:
    """The app for one loaded model; ``default_k`` answers requests that give no ``k``."""
    recommender = Recommender(model)
    batcher = Batcher(recommender)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="recforge", summary=f"next-item recommendations from {model.name}", lifespan=lifespan)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", model=model.name, num_items=model.num_items, max_len=model.max_len,
                      raw_ids=model.item_ids is not None)

    @app.post("/recommend", response_model=Recommendation, response_model_exclude_none=True)
    async def recommend(request: RecommendRequest) -> dict[str, Any]:
        k = default_k if request.k is None else request.k
        if k > model.num_items:
            raise invalid("k", f"k={k} is larger than the catalogue ({model.num_items} items)", k)
        if request.raw_ids and model.item_ids is None:
            raise invalid("raw_ids", f"this model has no item id map ({model.item_ids_problem}); send internal ids", True)
        encoded = recommender.encode(request.history, request.raw_ids)
        return await batcher.submit(Query(encoded, k, request.raw_ids, request.exclude_history))

    return app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recforge-serve", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run directory (its best checkpoint) or a .ckpt file inside one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--k", type=int, default=10, help="top-K for requests that give no k (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the scoring thread (default 1)")
    parser.add_argument("--data-root", default=None,
                        help="data folder, to rebuild the id map of a run without item_ids.json (raw ids)")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="log every request (default on)")
    args = parser.parse_args(argv)
    if args.k < 1 or args.threads < 1 or not 0 <= args.port <= 65535:
        parser.error(f"--k ({args.k}) and --threads ({args.threads}) must be at least 1 and --port ({args.port}) in 0..65535")
    return args


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    with user_errors():
        model = load_model(args.checkpoint, ids="try", data_root=args.data_root)
        if args.k > model.num_items:
            raise RecforgeError(f"--k {args.k} is larger than the catalogue of {model.name} ({model.num_items} items).")
    if model.item_ids is None:
        log.warning("raw ids are unavailable: %s", model.item_ids_problem)
    log.info("serving %s (%d items, max_len %d) on http://%s:%d", model.name, model.num_items, model.max_len,
             args.host, args.port)
    uvicorn.run(create_app(model, args.k), host=args.host, port=args.port, access_log=args.access_log)


if __name__ == "__main__":
    main()

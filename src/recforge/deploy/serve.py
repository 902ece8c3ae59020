"""recforge-serve: an HTTP server for a trained run's top-K recommendations (FastAPI + uvicorn).

``GET /health`` -> ``{"status": "ok", "model", "num_items", "max_len", "raw_ids"}``.
``GET /metrics`` -> Prometheus text: requests and errors by status, latency, batch sizes, model version and load
time (:mod:`recforge.deploy.metrics`).
``POST /recommend`` ``{"history": [...], "k": 10, "raw_ids": false, "exclude_history": true}`` ->
``{"items", "scores", "unknown"}`` (+ ``"warning"`` when no history item is known): the answer recforge-recommend
gives for the same history. A request the model cannot answer as asked is a 422 naming the field and the reason.
``"explain": true`` adds ``"explanations"``, as ``recforge-recommend --explain`` (integrated gradients): per
recommended item, ``[{"item", "index", "attribution"}]`` over the history items, strongest first.

The model is loaded once, before the port is opened. One scoring thread answers every request that is waiting
in a single model call (``torch.inference_mode()``, ``--threads`` torch threads, default 1), so concurrent
requests are batched and the event loop stays free for I/O and /health while the model runs.

Under overload (:mod:`recforge.deploy.limits`): a body above ``--max-body-bytes`` (default 1 MiB) is a 413 before it
is parsed; a request finding ``--max-queue`` (256) others waiting, or unanswered after ``--timeout`` (5 s), is a 503
with ``Retry-After: 1``. ``--index hnsw`` (or ivf, flat) takes the top-K from a faiss index (:mod:`recforge.deploy.index`).

Model updates (:mod:`recforge.deploy.reload`): every response has ``X-Model-Version``; with ``--admin-token`` (or
``RECFORGE_ADMIN_TOKEN``) ``POST /admin/reload`` loads a newer checkpoint and swaps it in between scoring calls,
without dropping a request.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from recforge.deploy.explain import explain_problem
from recforge.deploy.index import IndexSpec, add_index_arguments, index_spec
from recforge.deploy.limits import Overloaded, RequestGuard, ServeLimits
from recforge.deploy.metrics import ServeMetrics
from recforge.deploy.model import DeployedModel, load_model
from recforge.deploy.recommender import Query, Recommender
from recforge.deploy.reload import (
    TOKEN_ENV,
    VERSION_HEADER,
    ModelSlot,
    ReloadRequest,
    Served,
    VersionHeader,
    admin_token,
    authorised,
    reload_path,
    serve,
)
from recforge.errors import RecforgeError
from recforge.run.cli import user_errors

MAX_HISTORY = 10_000
DEFAULT_LIMITS, EXACT = ServeLimits(), IndexSpec()
log = logging.getLogger("recforge.serve")


class RecommendRequest(BaseModel):
    """A history, oldest first: internal ids (integers), or with ``raw_ids`` the dataset's raw ids."""

    model_config = ConfigDict(extra="forbid")

    history: list[StrictInt | StrictStr] = Field(max_length=MAX_HISTORY)
    k: StrictInt | None = Field(default=None, ge=1, description="default: the server's --k")
    raw_ids: StrictBool = False
    exclude_history: StrictBool = True
    explain: StrictBool = False

    @model_validator(mode="after")
    def _ids_in_one_space(self) -> RecommendRequest:
        if not self.raw_ids:
            strings = [i for i, item in enumerate(self.history) if isinstance(item, str)]
            if strings:
                i = strings[0]
                raise ValueError(f"history[{i}] = {self.history[i]!r} is a string but raw_ids is false; internal item ids are integers")
        return self


class HistoryAttribution(BaseModel):
    item: int | str
    index: int  # the item's place in the request's history
    attribution: float


class Recommendation(BaseModel):
    items: list[int | str]
    scores: list[float]
    unknown: list[int | str]
    warning: str | None = None
    explanations: list[list[HistoryAttribution]] | None = None  # one list per item, strongest first


class Health(BaseModel):
    status: str
    model: str
    num_items: int
    max_len: int
    raw_ids: bool


Waiting = tuple[Recommender, Query, "asyncio.Future[dict[str, Any]]"]


class Batcher:
    """Scores queued queries together: one model call for all that arrived while the previous call ran.
    At most ``limits.max_queue`` wait; each is answered within ``limits.timeout_seconds`` or refused.
    A query is scored by the recommender it was submitted with (the model that encoded it): after a reload,
    consecutive queries of one model share a call, so the swap falls between calls."""

    def __init__(self, limits: ServeLimits = DEFAULT_LIMITS, on_batch: Callable[[int], None] = lambda size: None) -> None:
        self.limits, self.on_batch = limits, on_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recforge-score")
        self.queue: asyncio.Queue[Waiting] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.limits.max_queue)
        self.task = asyncio.create_task(self._run())

    def depth(self) -> int:
        return 0 if self.queue is None else self.queue.qsize()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, recommender: Recommender, query: Query) -> dict[str, Any]:
        assert self.queue is not None, "Batcher.start() runs at application startup"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((recommender, query, future))
        except asyncio.QueueFull:
            raise Overloaded("queue_full", f"the server is busy: {self.limits.max_queue} requests are already "
                                           "waiting to be scored (--max-queue); retry later") from None
        try:
            return await asyncio.wait_for(future, self.limits.timeout_seconds)  # cancels the future on timeout
        except TimeoutError:
            raise Overloaded("timeout", f"the server is busy: no answer within {self.limits.timeout_seconds:g} s "
                                        "(--timeout); retry later") from None

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.limits.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            batch = [waiting for waiting in batch if not waiting[2].done()]  # timed out while queued
            for recommender, group in itertools.groupby(batch, key=lambda waiting: waiting[0]):
                await self._score(recommender, [(query, future) for _, query, future in group])

    async def _score(self, recommender: Recommender,
                     batch: list[tuple[Query, asyncio.Future[dict[str, Any]]]]) -> None:
        """One model call for ``batch``; each future gets its answer (or the call's exception)."""
        self.on_batch(len(batch))
        try:
            answers = await asyncio.get_running_loop().run_in_executor(
                self.executor, recommender.recommend, [q for q, _ in batch])
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


def create_app(model: DeployedModel, default_k: int = 10, limits: ServeLimits = DEFAULT_LIMITS,
               index: IndexSpec = EXACT, load_seconds: float = 0.0, admin_token: str | None = None,
               source: str | Path | None = None, data_root: str | Path | None = None) -> FastAPI:
    """The app for one loaded model; ``default_k`` answers requests that give no ``k``. The index is built here;
    its build time is added to ``load_seconds`` (the model's) in /metrics. With ``admin_token``, ``POST
    /admin/reload`` loads ``source`` (default: the model's run directory) or the checkpoint its body names."""
    began = time.perf_counter()
    slot = ModelSlot(serve(model, index))
    metrics = ServeMetrics(model, index.kind, load_seconds + time.perf_counter() - began, slot.current.version)
    batcher = Batcher(limits, on_batch=metrics.batch_size.observe)
    metrics.queue_depth.set_function(batcher.depth)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="recforge", summary=f"next-item recommendations from {model.name}", lifespan=lifespan)
    app.add_middleware(VersionHeader, slot=slot)
    app.add_middleware(RequestGuard, max_body_bytes=limits.max_body_bytes, observe=metrics.observe)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        metrics.rejected.labels(exc.reason).inc()
        return JSONResponse({"detail": exc.message}, status_code=503,
                            headers={"Retry-After": str(limits.retry_after_seconds)})

    @app.get("/metrics", response_class=Response)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        now = slot.current.model
        return Health(status="ok", model=now.name, num_items=now.num_items, max_len=now.max_len,
                      raw_ids=now.item_ids is not None)

    @app.post("/recommend", response_model=Recommendation, response_model_exclude_none=True)
    async def recommend(request: RecommendRequest, response: Response) -> dict[str, Any]:
        served = slot.current  # this request is encoded, scored and answered by this one model
        now, k = served.model, default_k if request.k is None else request.k
        response.headers[VERSION_HEADER] = served.version
        if k > now.num_items:
            raise invalid("k", f"k={k} is larger than the catalogue ({now.num_items} items)", k)
        if request.raw_ids and now.item_ids is None:
            raise invalid("raw_ids", f"this model has no item id map ({now.item_ids_problem}); send internal ids", True)
        if request.explain and (problem := explain_problem(now.scorer, "ig")) is not None:
            raise invalid("explain", problem, True)
        encoded = served.recommender.encode(request.history, request.raw_ids)
        return await batcher.submit(served.recommender,
                                    Query(encoded, k, request.raw_ids, request.exclude_history, request.explain))

    if admin_token is not None:
        add_reload_route(app, slot, metrics, admin_token, Reloader(source or model.run_dir, data_root, index, default_k))
    return app


@dataclass(frozen=True)
class Reloader:
    """How /admin/reload loads a model: the default path, the data root for id maps, the index, the server's k."""

    source: str | Path
    data_root: str | Path | None
    index: IndexSpec
    default_k: int

    def load(self, request: ReloadRequest | None) -> tuple[Served, float]:
        """The next model, ready to serve, and the seconds it took (runs off the event loop)."""
        began = time.perf_counter()
        model = load_model(reload_path(request, self.source), ids="try", data_root=self.data_root)
        if self.default_k > model.num_items:
            raise RecforgeError(f"{model.name} has {model.num_items} items, fewer than the server's --k {self.default_k}.")
        return serve(model, self.index), time.perf_counter() - began


def add_reload_route(app: FastAPI, slot: ModelSlot, metrics: ServeMetrics, token: str, reloader: Reloader) -> None:
    """``POST /admin/reload`` (bearer ``token``): load the next model, then swap it in; one reload at a time."""
    lock = asyncio.Lock()

    @app.post("/admin/reload", response_model=None)
    async def reload(body: ReloadRequest | None = None,
                     authorization: str | None = Header(default=None)) -> JSONResponse | dict[str, Any]:
        if not authorised(authorization, token):
            return JSONResponse({"detail": "POST /admin/reload needs the header 'Authorization: Bearer <admin "
                                           "token>' with the token the server was started with"}, status_code=403)
        async with lock:
            try:
                served, seconds = await asyncio.to_thread(reloader.load, body)
            except RecforgeError as exc:
                metrics.reloads.labels("failed").inc()
                return JSONResponse({"detail": f"{exc} The model serving is unchanged."}, status_code=422)
            previous = slot.swap(served)
        metrics.model_loaded(served.model, reloader.index.kind, seconds, served.version)
        metrics.reloads.labels("ok").inc()
        log.info("reloaded: now serving %s (version %s, was %s)", served.model.name, served.version, previous.version)
        return {"model": served.model.name, "version": served.version, "previous": previous.version,
                "num_items": served.model.num_items, "load_seconds": round(seconds, 3)}


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
    parser.add_argument("--max-body-bytes", type=int, default=ServeLimits.max_body_bytes,
                        help=f"larger request bodies are refused with 413 unread (default {ServeLimits.max_body_bytes}, 1 MiB)")
    parser.add_argument("--max-queue", type=int, default=ServeLimits.max_queue,
                        help=f"requests waiting to be scored; one more gets 503 (default {ServeLimits.max_queue})")
    parser.add_argument("--timeout", type=float, default=ServeLimits.timeout_seconds,
                        help=f"seconds a request may wait for its answer before a 503 (default {ServeLimits.timeout_seconds:g})")
    parser.add_argument("--admin-token", default=None,
                        help=f"enables POST /admin/reload for requests with 'Authorization: Bearer <token>' "
                             f"(default: ${TOKEN_ENV}; neither: no admin endpoint)")
    add_index_arguments(parser)
    args = parser.parse_args(argv)
    if args.k < 1 or args.threads < 1 or not 0 <= args.port <= 65535:
        parser.error(f"--k ({args.k}) and --threads ({args.threads}) must be at least 1 and --port ({args.port}) in 0..65535")
    problem = serve_limits(args).problem()
    if problem is not None:
        parser.error(problem)
    return args


def serve_limits(args: argparse.Namespace) -> ServeLimits:
    return ServeLimits(max_body_bytes=args.max_body_bytes, max_queue=args.max_queue, timeout_seconds=args.timeout)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    with user_errors():
        began = time.perf_counter()
        model = load_model(args.checkpoint, ids="try", data_root=args.data_root)
        if args.k > model.num_items:
            raise RecforgeError(f"--k {args.k} is larger than the catalogue of {model.name} ({model.num_items} items).")
        app = create_app(model, args.k, serve_limits(args), index_spec(args), time.perf_counter() - began,
                         admin_token(args.admin_token), args.checkpoint, args.data_root)
    if model.item_ids is None:
        log.warning("raw ids are unavailable: %s", model.item_ids_problem)
    log.info("serving %s (%d items, max_len %d) on http://%s:%d", model.name, model.num_items, model.max_len,
             args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log)


if __name__ == "__main__":
    main()

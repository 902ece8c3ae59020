"""recforge-serve under operation, in process (a fresh app and metrics registry per test): /metrics counts,
413 for oversized bodies, 503 with Retry-After for a full queue and a timeout, the command-line options."""
from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from recforge.deploy.index import IndexSpec, index_spec
from recforge.deploy.limits import ServeLimits
from recforge.deploy.model import DeployedModel, load_model
from recforge.deploy.recommender import Query, Recommender
from recforge.deploy.serve import create_app, parse_args, serve_limits

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> DeployedModel:
    return load_model(tiny_run)


def with_client(app: FastAPI, body: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run ``body`` against ``app`` in process, inside the app's lifespan (the scoring thread runs)."""
    async def main() -> T:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
                return await body(client)
    return asyncio.run(main())


async def scrape(client: httpx.AsyncClient) -> Samples:
    """/metrics parsed by prometheus_client's own parser: {(sample name, labels): value}."""
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_errors_latency_batches_and_name_the_model(model: DeployedModel) -> None:
    app = create_app(model, limits=ServeLimits(), load_seconds=1.5)

    async def traffic(client: httpx.AsyncClient) -> Samples:
        for body in ({"history": [5, 9, 2]}, {"history": [1], "k": 3}, {"history": []}):
            assert (await client.post("/recommend", json=body)).status_code == 200
        for body in ({"history": [1], "k": 0}, {"history": "x"}):
            assert (await client.post("/recommend", json=body)).status_code == 422
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/no/such/page")).status_code == 404
        return await scrape(client)

    samples = with_client(app, traffic)
    assert value(samples, "recforge_http_requests_total", path="/recommend", status="200") == 3
    assert value(samples, "recforge_http_requests_total", path="/recommend", status="422") == 2
    assert value(samples, "recforge_http_requests_total", path="/health", status="200") == 1
    assert value(samples, "recforge_http_requests_total", path="other", status="404") == 1
    assert value(samples, "recforge_http_requests_total", path="/metrics", status="200") == 0  # counted once answered
    errors = {labels: v for (name, labels), v in samples.items() if name == "recforge_http_errors_total"}
    assert errors == {frozenset({("path", "/recommend"), ("status", "422")}): 2,
                      frozenset({("path", "other"), ("status", "404")}): 1}
    assert value(samples, "recforge_http_request_duration_seconds_count", path="/recommend") == 5
    assert value(samples, "recforge_http_request_duration_seconds_bucket", path="/recommend", le="+Inf") == 5
    assert 0 < value(samples, "recforge_http_request_duration_seconds_sum", path="/recommend") < 5
    # one request at a time: three model calls of one request each (422s never reach the model)
    assert value(samples, "recforge_scoring_batch_size_count") == 3
    assert value(samples, "recforge_scoring_batch_size_sum") == 3
    assert value(samples, "recforge_scoring_batch_size_bucket", le="1.0") == 3
    assert value(samples, "recforge_scoring_queue_depth") == 0
    version = hashlib.sha256(model.checkpoint.read_bytes()).hexdigest()[:12]
    assert value(samples, "recforge_model_info", model=model.name, version=version, dataset=model.dataset,
                 num_items="59", index="exact") == 1
    assert value(samples, "recforge_model_load_seconds") == pytest.approx(1.5, abs=0.05)
    assert value(samples, "recforge_model_loaded_timestamp_seconds") > 1.7e9


def test_two_apps_keep_separate_registries(model: DeployedModel) -> None:
    first, second = create_app(model), create_app(model)

    async def one_request(client: httpx.AsyncClient) -> Samples:
        await client.post("/recommend", json={"history": [1]})
        return await scrape(client)

    assert value(with_client(first, one_request), "recforge_http_requests_total", path="/recommend", status="200") == 1
    assert value(with_client(second, one_request), "recforge_http_requests_total", path="/recommend", status="200") == 1


def padded(size: int) -> bytes:
    """A valid request body of exactly ``size`` bytes (JSON padded with spaces)."""
    body = b'{"history": [1, 2], "k": 3}'
    return body + b" " * (size - len(body))


async def chunks(data: bytes, size: int = 16) -> Any:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_bodies_above_the_limit_are_413_with_or_without_content_length(model: DeployedModel) -> None:
    app = create_app(model, limits=ServeLimits(max_body_bytes=100))
    headers = {"content-type": "application/json"}

    async def requests(client: httpx.AsyncClient) -> tuple[list[httpx.Response], Samples]:
        answers = [await client.post("/recommend", content=padded(100), headers=headers),
                   await client.post("/recommend", content=padded(101), headers=headers),
                   await client.post("/recommend", content=chunks(padded(100)), headers=headers),
                   await client.post("/recommend", content=chunks(padded(101)), headers=headers)]
        return answers, await scrape(client)

    (fits, large, fits_streamed, large_streamed), samples = with_client(app, requests)
    assert "content-length" not in fits_streamed.request.headers  # sent chunked
    assert fits.status_code == fits_streamed.status_code == 200 and len(fits.json()["items"]) == 3
    for response in (large, large_streamed):
        assert response.status_code == 413 and response.headers["connection"] == "close"
        assert response.json() == {"detail": "the request body is larger than the server's limit of 100 bytes "
                                             "(--max-body-bytes)"}
    assert value(samples, "recforge_http_errors_total", path="/recommend", status="413") == 2


@pytest.fixture
def blocked_scoring(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """(entered, release): the scoring thread signals ``entered`` and waits for ``release`` before each call."""
    entered, release = threading.Event(), threading.Event()
    original = Recommender.recommend

    def blocking(self: Recommender, queries: Any) -> list[dict[str, Any]]:
        entered.set()
        release.wait(20)
        return original(self, queries)

    monkeypatch.setattr(Recommender, "recommend", blocking)
    return entered, release


def test_a_full_queue_is_503_with_retry_after_and_the_rest_are_answered(model: DeployedModel, blocked_scoring) -> None:
    entered, release = blocked_scoring
    app = create_app(model, limits=ServeLimits(max_queue=4, timeout_seconds=20))

    async def overload(client: httpx.AsyncClient) -> tuple[list[httpx.Response], httpx.Response, Samples, Samples]:
        def post(i: int) -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(client.post("/recommend", json={"history": [1 + i]}))

        first = post(0)
        assert await asyncio.to_thread(entered.wait, 10)  # the scoring thread holds the first request
        waiting = [post(i) for i in range(1, 5)]
        while value(await scrape(client), "recforge_scoring_queue_depth") < 4:
            await asyncio.sleep(0.01)
        refused = await client.post("/recommend", json={"history": [9]})
        during = await scrape(client)
        release.set()
        answered = [await task for task in [first, *waiting]]
        return answered, refused, during, await scrape(client)

    answered, refused, during, after = with_client(app, overload)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["detail"] == ("the server is busy: 4 requests are already waiting to be scored "
                                        "(--max-queue); retry later")
    assert [r.status_code for r in answered] == [200] * 5
    assert value(during, "recforge_scoring_queue_depth") == 4
    assert value(after, "recforge_rejected_total", reason="queue_full") == 1
    assert value(after, "recforge_http_requests_total", path="/recommend", status="503") == 1
    assert value(after, "recforge_http_requests_total", path="/recommend", status="200") == 5
    # one call for the first request, one for the four that waited together
    assert value(after, "recforge_scoring_batch_size_count") == 2 and value(after, "recforge_scoring_batch_size_sum") == 5
    assert value(after, "recforge_scoring_batch_size_bucket", le="4.0") == 2
    assert value(after, "recforge_scoring_batch_size_bucket", le="2.0") == 1


def test_a_request_unanswered_within_the_timeout_is_503_and_not_scored_later(model: DeployedModel,
                                                                           blocked_scoring) -> None:
    entered, release = blocked_scoring
    app = create_app(model, limits=ServeLimits(timeout_seconds=0.3))

    async def slow(client: httpx.AsyncClient) -> tuple[list[httpx.Response], httpx.Response, Samples]:
        held = asyncio.create_task(client.post("/recommend", json={"history": [1]}))
        assert await asyncio.to_thread(entered.wait, 10)
        queued = await client.post("/recommend", json={"history": [2]})  # waits behind the held one
        timed_out = [await held, queued]
        release.set()
        await asyncio.sleep(0.2)  # the scoring thread finishes the held call, skips the timed-out queued one
        return timed_out, await client.post("/recommend", json={"history": [3]}), await scrape(client)

    timed_out, later, samples = with_client(app, slow)
    for response in timed_out:
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["detail"] == "the server is busy: no answer within 0.3 s (--timeout); retry later"
    assert later.status_code == 200
    assert value(samples, "recforge_rejected_total", reason="timeout") == 2
    assert value(samples, "recforge_scoring_batch_size_count") == 2  # the held request's call and the later one's


def test_command_line_options_build_the_app(model: DeployedModel, tiny_run: Path) -> None:
    args = parse_args([str(tiny_run), "--max-body-bytes", "200", "--max-queue", "3", "--timeout", "2.5",
                       "--index", "hnsw", "--index-ef-search", "60", "--index-nprobe", "5"])
    assert serve_limits(args) == ServeLimits(max_body_bytes=200, max_queue=3, timeout_seconds=2.5)
    assert index_spec(args) == IndexSpec(kind="hnsw", ef_search=60, nprobe=5)
    defaults = parse_args([str(tiny_run)])
    assert serve_limits(defaults) == ServeLimits(max_body_bytes=1 << 20, max_queue=256, timeout_seconds=5.0)
    assert index_spec(defaults) == IndexSpec(kind="exact")
    app = create_app(model, 4, serve_limits(args), index_spec(args))

    async def ask(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, Samples]:
        return (await client.post("/recommend", json={"history": [5, 9, 2]}),
                await client.post("/recommend", content=padded(201), headers={"content-type": "application/json"}),
                await scrape(client))

    answer, large, samples = with_client(app, ask)
    exact = Recommender(model)
    [expected] = exact.recommend([Query(exact.encode([5, 9, 2], raw_ids=False), 4)])
    assert answer.status_code == 200 and answer.json()["items"] == expected["items"]  # 59 items: hnsw is exact
    assert large.status_code == 413
    assert any(name == "recforge_model_info" and ("index", "hnsw") in labels for name, labels in samples)


@pytest.mark.parametrize("option, message", [
    (["--max-body-bytes", "0"], "--max-body-bytes (0), --max-queue (256) and max_batch (64) must be at least 1"),
    (["--max-queue", "0"], "--max-queue (0)"),
    (["--timeout", "0"], "--timeout (0.0) must be a positive number of seconds"),
    (["--index", "annoy"], "invalid choice: 'annoy'"),
])
def test_bad_options_are_one_line_errors(tiny_run: Path, capsys, option: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args([str(tiny_run), *option])
    assert exit_.value.code == 2 and message in capsys.readouterr().err

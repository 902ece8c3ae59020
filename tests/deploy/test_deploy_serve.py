"""recforge-serve as a real process on 127.0.0.1: health, answers equal to recforge-recommend, 422 with reasons."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from recforge.deploy.recommend import main as recommend_main

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server started by its console script; its URL once /health answers (60 s at most)."""
    with serving(tiny_run, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@contextmanager
def serving(run: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``recforge-serve <run>`` on a free loopback port with ``env`` added; its URL once /health answers (60 s at
    most); stopped on exit. Its output goes to ``log``, shown when it does not start."""
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("recforge-serve")), str(run), "--host", HOST, "--port", str(port),
           "--no-access-log"]
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, stdout=sink,
                                stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"recforge-serve did not become ready: {log.read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def post(url: str, body: Any) -> httpx.Response:
    return httpx.post(f"{url}/recommend", json=body, timeout=10)


def test_health_names_the_model(server: str, tiny_run: Path) -> None:
    answer = httpx.get(f"{server}/health", timeout=5).json()
    assert answer == {"status": "ok", "model": f"{tiny_run.name}/checkpoints/epoch001.ckpt", "num_items": 59,
                      "max_len": 10, "raw_ids": True}


def test_answers_equal_recforge_recommend(server: str, tiny_run: Path, tmp_path: Path) -> None:
    raw = json.loads((tiny_run / "item_ids.json").read_text())["item_ids"]
    queries = [({"history": [5, 9, 2], "k": 5}, []),
               ({"history": list(range(1, 26)), "k": 10, "exclude_history": False}, ["--keep-history"]),
               ({"history": [], "k": 3}, []),
               ({"history": [7, 999], "k": 4}, []),
               ({"history": [raw[4], raw[17], "nope"], "k": 6, "raw_ids": True}, ["--raw-ids"])]
    for body, options in queries:
        source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(json.dumps({"user": "u", "history": body["history"]}) + "\n")
        recommend_main([str(tiny_run), "--input", str(source), "--output", str(sink), "--k", str(body["k"]), *options])
        expected = json.loads(sink.read_text())
        response = post(server, body)
        assert response.status_code == 200
        got = response.json()
        assert got["items"] == expected["items"] and got["unknown"] == expected["unknown"]
        assert got["scores"] == pytest.approx(expected["scores"], abs=1e-5)
        assert got.get("warning") == expected.get("warning")
    assert post(server, {"history": []}).json()["warning"].startswith("no item of the history")
    assert len(post(server, {"history": [1]}).json()["items"]) == 10  # the server's --k


@pytest.mark.parametrize("body, field, reason", [
    ({"history": [1], "k": 0}, "k", "greater than or equal to 1"),
    ({"history": [1], "k": 60}, "k", "k=60 is larger than the catalogue (59 items)"),
    ({"history": 5}, "history", "valid list"),
    ({"history": [1.5]}, "history", "valid integer"),
    ({"history": [True]}, "history", "valid integer"),
    ({"history": ["12"]}, None, "history[0] = '12' is a string but raw_ids is false"),
    ({"history": [1] * 10_001}, "history", "at most 10000 items"),
    ({"history": [1], "raw_ids": "yes"}, "raw_ids", "valid boolean"),
    ({"history": [1], "user": "u"}, "user", "Extra inputs are not permitted"),
    ({}, "history", "Field required"),
])
def test_bad_requests_are_422_with_the_reason(server: str, body: dict, field: str | None, reason: str) -> None:
    response = post(server, body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(reason in error["msg"] and (field is None or field in error["loc"]) for error in errors), errors


def test_concurrent_requests_batched_together_get_their_own_answers(server: str, tiny_run: Path) -> None:
    raw = json.loads((tiny_run / "item_ids.json").read_text())["item_ids"]
    bodies = [{"history": list(range(1 + i, 4 + i)), "k": 1 + i % 7, "exclude_history": i % 3 != 0} for i in range(24)]
    bodies += [{"history": [raw[i], raw[i + 1]], "k": 5, "raw_ids": True} for i in range(1, 9)]
    alone = [post(server, body).json() for body in bodies]

    async def together() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/recommend", json=body) for body in bodies))
        return [response.json() for response in responses]

    for body, single, batched in zip(bodies, alone, asyncio.run(together())):
        assert batched["items"] == single["items"] and len(batched["items"]) == body["k"]
        assert batched["scores"] == pytest.approx(single["scores"], abs=1e-5)
        if body.get("raw_ids"):
            assert all(isinstance(item, str) for item in batched["items"])


def test_a_10_mb_body_is_refused_with_413_unread_with_or_without_content_length(server: str) -> None:
    body = json.dumps({"history": [1] * 3_500_000}).encode()  # 10.5 MB: parsing it took ~7 s before its 422
    headers = {"content-type": "application/json"}

    def streamed() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 16):
            yield body[start:start + (1 << 16)]

    for content in (body, streamed()):
        began = time.monotonic()
        response = httpx.post(f"{server}/recommend", content=content, headers=headers, timeout=30)
        assert response.status_code == 413 and response.headers["connection"] == "close"
        assert response.json()["detail"] == ("the request body is larger than the server's limit of 1048576 bytes "
                                             "(--max-body-bytes)")
        assert time.monotonic() - began < 3
    assert post(server, {"history": [1], "k": 2}).status_code == 200  # and the server goes on answering


def test_metrics_are_prometheus_text(server: str) -> None:
    response = httpx.get(f"{server}/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=")
    assert 'recforge_model_info{' in response.text and 'index="exact"' in response.text

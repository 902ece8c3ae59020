"""Load test of recforge-serve on loopback: p50/p99 latency and throughput at several concurrency levels.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py outputs/runs/<run> --data-root ../shared/data

Starts ``recforge-serve <run> --host 127.0.0.1`` on a free port (only ever 127.0.0.1), waits for /health
(bounded), then for each concurrency level sends at most ``--requests`` POST /recommend requests (k=10) with the
histories of real test-split users (every item before the test target), stopping a level after ``--time-limit``
seconds whatever is left, and finally stops the server.

``--overload C`` adds a last level of C concurrent clients against a server started with ``--max-queue`` and
``--timeout``: more clients than the queue holds, each sending its next request as soon as it has an answer (a 503's
Retry-After is not waited for: the worst case). An httpx client in one process cannot send faster than the server
answers, so this level writes pre-encoded HTTP/1.1 requests on raw keep-alive sockets. It counts the answers by
status, the latency of 200s and of 503s, and the latency of a /health probe sent every 100 ms meanwhile: the server
keeps answering. Every level also reports what the server measured itself (its /metrics, scraped before and after).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import httpx
from hydra.utils import instantiate
from omegaconf import OmegaConf
from prometheus_client.parser import text_string_to_metric_families

from recforge.deploy.model import dataset_config, resolve_checkpoint

HOST = "127.0.0.1"  # loopback only: this benchmark never sends traffic anywhere else


def test_histories(run_dir: Path, data_root: str | None) -> list[list[int]]:
    """Each test sample's full history (internal ids, oldest first): the items before its target."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    datamodule = instantiate(dataset_config(cfg, data_root))
    datamodule.setup("test")
    test = datamodule.test_set
    items, starts = test.items.tolist(), test.indptr[test.users].tolist()
    return [items[s:s + p] for s, p in zip(starts, test.positions.tolist())]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(run_dir: Path, port: int, threads: int, log: IO[str], options: list[str],
                 timeout: float = 120) -> subprocess.Popen:
    """recforge-serve as a child process (output to ``log``), returned once /health answers."""
    script = Path(sys.executable).with_name("recforge-serve")
    proc = subprocess.Popen([str(script), str(run_dir), "--host", HOST, "--port", str(port), "--threads", str(threads),
                             "--no-access-log", *options], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.25)
    proc.terminate()
    proc.wait(timeout=30)
    log.seek(0)
    raise SystemExit(f"recforge-serve did not become ready: {log.read()[-2000:]}")


def percentile(ms: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``ms`` by the nearest rank below; nan when empty."""
    ms = sorted(ms)
    return ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")


async def probe_health(client: httpx.AsyncClient, stop: asyncio.Event, latencies: list[float]) -> None:
    """GET /health every 100 ms until ``stop``; a probe that fails or exceeds 10 s counts as 10 s."""
    while not stop.is_set():
        began = time.perf_counter()
        try:
            ok = (await client.get("/health", timeout=10)).status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append(1000 * (time.perf_counter() - began) if ok else 10_000.0)
        await asyncio.sleep(0.1)


async def server_view(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's own /metrics: {(sample, sorted labels): value}."""
    text = (await client.get("/metrics", timeout=30)).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def server_stats(before: dict, after: dict) -> dict[str, float]:
    """What the server measured between two scrapes: /recommend answers by status, the 0.5 and 0.99 quantiles of
    its request duration (the upper bound of the histogram bucket holding them), mean scoring batch size."""
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    statuses = {dict(labels)["status"]: v for (name, labels), v in delta.items()
                if name == "recforge_http_requests_total" and dict(labels)["path"] == "/recommend" and v}
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in delta.items()
                     if name == "recforge_http_request_duration_seconds_bucket" and dict(labels)["path"] == "/recommend")
    total = buckets[-1][1] if buckets else 0.0

    def quantile(q: float) -> float:
        return next((1000 * le for le, count in buckets if count >= q * total), float("nan")) if total else float("nan")

    batches = delta.get(("recforge_scoring_batch_size_count", ()), 0.0)
    return {"server_statuses": statuses, "server_p50_ms_at_most": quantile(0.5), "server_p99_ms_at_most": quantile(0.99),
            "mean_batch": delta.get(("recforge_scoring_batch_size_sum", ()), 0.0) / batches if batches else float("nan")}


def request_bytes(history: list[int], host: str, port: int) -> bytes:
    """A complete HTTP/1.1 POST /recommend (k=10) for ``history``, keep-alive."""
    body = json.dumps({"history": history, "k": 10}).encode()
    head = (f"POST /recommend HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def raw_post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bool]:
    """Send one request and read its answer: (status, whether the server closes the connection)."""
    writer.write(request)
    await writer.drain()
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers.get("connection", "").lower() == "close"


async def level(url: str, histories: list[list[int]], concurrency: int, requests: int,
                time_limit: float, raw: bool = False) -> dict[str, Any]:
    """``concurrency`` clients sending requests back to back until ``requests`` were sent or time is up; ``raw``:
    pre-encoded requests on raw sockets instead of httpx."""
    host, port = httpx.URL(url).host, httpx.URL(url).port or 80
    encoded = [request_bytes(h, host, port) for h in histories[:5000]] if raw else []
    latencies: dict[str, list[float]] = {}
    statuses: Counter[str] = Counter()
    health: list[float] = []
    sent = 0
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        before = await server_view(client)
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal sent
            conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
            while sent < requests and time.perf_counter() - start < time_limit:
                history = histories[sent % len(histories)]
                sent += 1
                began = time.perf_counter()
                try:
                    if raw:
                        conn = conn or await asyncio.open_connection(host, port)
                        code, close = await raw_post(*conn, encoded[(sent - 1) % len(encoded)])
                        if close:
                            conn[1].close()
                            conn = None
                    else:
                        code = (await client.post("/recommend", json={"history": history, "k": 10})).status_code
                    status = str(code)
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as exc:  # counted, not raised
                    status = type(exc).__name__
                    if conn is not None:
                        conn[1].close()
                        conn = None
                latencies.setdefault(status, []).append(1000 * (time.perf_counter() - began))
                statuses[status] += 1
            if conn is not None:
                conn[1].close()

        stop = asyncio.Event()
        prober = asyncio.create_task(probe_health(client, stop, health))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        stop.set()
        await prober
        seen = server_stats(before, await server_view(client))
    ok, busy = latencies.get("200", []), latencies.get("503", [])
    return {"concurrency": concurrency, "requests": sum(statuses.values()), "statuses": dict(statuses),
            "failures": sum(statuses.values()) - statuses["200"], "seconds": wall,
            "p50_ms": percentile(ok, 0.5), "p99_ms": percentile(ok, 0.99),
            "p50_503_ms": percentile(busy, 0.5), "p99_503_ms": percentile(busy, 0.99),
            "health_p50_ms": percentile(health, 0.5), "health_max_ms": max(health, default=float("nan")),
            "throughput_rps": statuses["200"] / wall, **seen}


def oversized(url: str, megabytes: float) -> list[str]:
    """One POST /recommend of a ``megabytes`` JSON body, sent with Content-Length and chunked: status and seconds."""
    body = json.dumps({"history": [1] * int(megabytes * 1e6 / 3)}).encode()  # "1, " is 3 bytes

    def chunks() -> Any:
        for start in range(0, len(body), 1 << 16):
            yield body[start:start + (1 << 16)]

    lines = []
    for name, content in (("with Content-Length", body), ("chunked", chunks())):
        began = time.perf_counter()
        response = httpx.post(f"{url}/recommend", content=content, headers={"content-type": "application/json"},
                              timeout=120)
        lines.append(f"{len(body) / 1e6:.1f} MB body {name}: {response.status_code} in {time.perf_counter() - began:.2f} s")
    return lines


async def run_levels(url: str, histories: list[list[int]], levels: list[int], requests: int,
                     time_limit: float, overload: int, overload_requests: int) -> list[dict[str, Any]]:
    await level(url, histories, 1, 20, time_limit)  # warm-up, not recorded
    rows = []
    for concurrency in levels + ([overload] if overload else []):
        last = concurrency == overload
        rows.append(await level(url, histories, concurrency, overload_requests if last else requests, time_limit, raw=last))
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory (its best checkpoint) or a .ckpt file inside one")
    parser.add_argument("--data-root", default=None, help="the folder holding the run's dataset")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=500, help="requests per level (at most)")
    parser.add_argument("--time-limit", type=float, default=60, help="seconds per level (at most)")
    parser.add_argument("--threads", type=int, default=1, help="the server's --threads")
    parser.add_argument("--overload", type=int, default=0,
                        help="a last level with this many clients on raw sockets (0: none)")
    parser.add_argument("--overload-requests", type=int, default=5000, help="requests of the overload level (at most)")
    parser.add_argument("--max-queue", type=int, default=None, help="the server's --max-queue (default: its own)")
    parser.add_argument("--timeout", type=float, default=None, help="the server's --timeout (default: its own)")
    parser.add_argument("--index", default=None, help="the server's --index (default: exact)")
    parser.add_argument("--max-body-bytes", type=int, default=None, help="the server's --max-body-bytes (default: its own)")
    parser.add_argument("--oversized-mb", type=float, default=0,
                        help="first send one body of this many MB, with and without Content-Length (0: none)")
    args = parser.parse_args()
    options = [f"--{name.replace('_', '-')}={value}" for name, value in
               (("max_queue", args.max_queue), ("timeout", args.timeout), ("index", args.index),
                ("max_body_bytes", args.max_body_bytes)) if value is not None]
    run_dir, _ = resolve_checkpoint(args.run)
    histories = test_histories(run_dir, args.data_root)
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        server = start_server(Path(args.run), port, args.threads, log, options)
        try:
            big = oversized(f"http://{HOST}:{port}", args.oversized_mb) if args.oversized_mb else []
            rows = asyncio.run(run_levels(f"http://{HOST}:{port}", histories, args.levels, args.requests,
                                          args.time_limit, args.overload, args.overload_requests))
        finally:
            server.terminate()
            server.wait(timeout=30)
    lengths = sorted(len(h) for h in histories)
    print(f"{len(histories)} test histories, length median {lengths[len(lengths) // 2]}, max {lengths[-1]} "
          f"(the model reads the last max_len)")
    print(f"server options: {' '.join(options) or '(defaults)'}")
    print("\n".join(big))
    print("| concurrency | requests | 200 | 503 | other | p50 ms (200) | p99 ms (200) | p50 ms (503) | p99 ms (503) "
          "| 200s / s | /health p50 ms | /health max ms | server p50 / p99 ms (≤) | mean batch |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        other = r["requests"] - r["statuses"].get("200", 0) - r["statuses"].get("503", 0)
        print(f"| {r['concurrency']} | {r['requests']} | {r['statuses'].get('200', 0)} | {r['statuses'].get('503', 0)} "
              f"| {other} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p50_503_ms']:.1f} | {r['p99_503_ms']:.1f} "
              f"| {r['throughput_rps']:.0f} | {r['health_p50_ms']:.1f} | {r['health_max_ms']:.1f} "
              f"| {r['server_p50_ms_at_most']:g} / {r['server_p99_ms_at_most']:g} | {r['mean_batch']:.1f} |")


if __name__ == "__main__":
    main()

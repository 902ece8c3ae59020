"""Load test of recforge-serve on loopback: p50/p99 latency and throughput at several concurrency levels.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py outputs/runs/<run> --data-root ../shared/data

Starts ``recforge-serve <run> --host 127.0.0.1`` on a free port (only ever 127.0.0.1), waits for /health
(bounded), then for each concurrency level sends at most ``--requests`` POST /recommend requests (k=10) with the
histories of real test-split users (every item before the test target), stopping a level after ``--time-limit``
seconds whatever is left, and finally stops the server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx
from hydra.utils import instantiate
from omegaconf import OmegaConf

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


def start_server(run_dir: Path, port: int, threads: int, log: IO[str], timeout: float = 120) -> subprocess.Popen:
    """recforge-serve as a child process (output to ``log``), returned once /health answers."""
    script = Path(sys.executable).with_name("recforge-serve")
    proc = subprocess.Popen([str(script), str(run_dir), "--host", HOST, "--port", str(port), "--threads", str(threads),
                             "--no-access-log"], env={**os.environ, "OMP_NUM_THREADS": "1"},
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


async def level(url: str, histories: list[list[int]], concurrency: int, requests: int,
                time_limit: float) -> dict[str, Any]:
    """``concurrency`` clients sending requests back to back until ``requests`` were sent or time is up."""
    latencies: list[float] = []
    failures = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal sent, failures
            while sent < requests and time.perf_counter() - start < time_limit:
                history = histories[sent % len(histories)]
                sent += 1
                began = time.perf_counter()
                response = await client.post("/recommend", json={"history": history, "k": 10})
                latencies.append(time.perf_counter() - began)
                failures += response.status_code != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = sorted(1000 * t for t in latencies)
    return {"concurrency": concurrency, "requests": len(ms), "failures": failures, "seconds": wall,
            "p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "throughput_rps": len(ms) / wall}


async def run_levels(url: str, histories: list[list[int]], levels: list[int], requests: int,
                     time_limit: float) -> list[dict[str, Any]]:
    await level(url, histories, 1, 20, time_limit)  # warm-up, not recorded
    rows = []
    for concurrency in levels:
        rows.append(await level(url, histories, concurrency, requests, time_limit))
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
    args = parser.parse_args()
    run_dir, _ = resolve_checkpoint(args.run)
    histories = test_histories(run_dir, args.data_root)
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        server = start_server(Path(args.run), port, args.threads, log)
        try:
            rows = asyncio.run(run_levels(f"http://{HOST}:{port}", histories, args.levels, args.requests,
                                          args.time_limit))
        finally:
            server.terminate()
            server.wait(timeout=30)
    lengths = sorted(len(h) for h in histories)
    print(f"{len(histories)} test histories, length median {lengths[len(lengths) // 2]}, max {lengths[-1]} "
          f"(the model reads the last max_len)")
    print("| concurrency | requests | failures | p50 ms | p99 ms | requests / s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['requests']} | {r['failures']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['throughput_rps']:.0f} |")


if __name__ == "__main__":
    main()

"""Load test of recforge-serve swapping models during traffic (loopback): failed requests, latency, versions.

    OMP_NUM_THREADS=1 python benchmarks/serve_reload.py outputs/online/stale outputs/online/updated \
        --clients 16 --seconds 30 --reloads 10

Starts ``recforge-serve <first run> --admin-token <random>`` on 127.0.0.1 (a free port), runs ``--clients``
concurrent clients posting /recommend (k=10, histories of random known items) for ``--seconds``, and meanwhile
``POST /admin/reload`` every ``seconds / (reloads + 1)`` s, alternating between the two runs. Counts every answer
by status (and transport errors), the latency of the 200s, the answers per ``X-Model-Version``, and each reload's
time; then stops the server. Failed = anything but 200.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import HOST, free_port, percentile, start_server


async def traffic(url: str, token: str, runs: list[str], clients: int, seconds: float, reloads: int,
                  num_items: int) -> dict:
    statuses: Counter = Counter()
    versions: Counter = Counter()
    latencies: list[float] = []
    reload_seconds: list[float] = []
    stop = asyncio.Event()
    rng = random.Random(0)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            history = [rng.randint(1, num_items) for _ in range(rng.randint(1, 50))]
            began = time.perf_counter()
            try:
                response = await client.post(f"{url}/recommend", json={"history": history, "k": 10})
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                continue
            statuses[response.status_code] += 1
            if response.status_code == 200:
                latencies.append(1000 * (time.perf_counter() - began))
                versions[response.headers["x-model-version"]] += 1

    limits = httpx.Limits(max_connections=clients + 1)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        workers = [asyncio.create_task(client_loop(client)) for _ in range(clients)]
        for i in range(reloads):
            await asyncio.sleep(seconds / (reloads + 1))
            began = time.perf_counter()
            answer = await client.post(f"{url}/admin/reload", json={"checkpoint": runs[(i + 1) % 2]},
                                       headers={"Authorization": f"Bearer {token}"})
            if answer.status_code != 200:
                raise SystemExit(f"reload {i} failed: {answer.status_code} {answer.text}")
            reload_seconds.append(time.perf_counter() - began)
        await asyncio.sleep(seconds / (reloads + 1))
        stop.set()
        await asyncio.gather(*workers)
    ok = statuses.get(200, 0)
    return {"requests": sum(statuses.values()), "ok": ok, "failed": sum(statuses.values()) - ok,
            "statuses": {str(k): v for k, v in statuses.items()}, "versions": dict(versions),
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "throughput_rps": ok / seconds, "reloads": len(reload_seconds),
            "reload_seconds_median": sorted(reload_seconds)[len(reload_seconds) // 2] if reload_seconds else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="the run served at start")
    parser.add_argument("second", help="the run swapped in (then back, alternating)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--output", default=None, help="also write the result as JSON here")
    args = parser.parse_args()
    runs = [str(Path(args.first).resolve()), str(Path(args.second).resolve())]
    num_items = min(json.loads((Path(run) / "item_ids.json").read_text())["num_items"] for run in runs)
    token, port = secrets.token_urlsafe(16), free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = start_server(Path(runs[0]), port, 1, log, ["--admin-token", token])
        try:
            result = asyncio.run(traffic(f"http://{HOST}:{port}", token, runs, args.clients, args.seconds,
                                         args.reloads, num_items))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result.update(clients=args.clients, seconds=args.seconds, first=args.first, second=args.second)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()

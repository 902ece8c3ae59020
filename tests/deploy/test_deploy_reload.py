"""recforge-serve switching models: X-Model-Version on every answer, POST /admin/reload behind a token (absent
without one), queued requests finish on their model, and a real server swapping models under concurrent load
answers every request."""
from __future__ import annotations

import asyncio
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from recforge.deploy.limits import ServeLimits
from recforge.deploy.metrics import checkpoint_version
from recforge.deploy.model import DeployedModel, load_model
from recforge.deploy.recommender import Query, Recommender
from recforge.deploy.reload import TOKEN_ENV, admin_token, authorised
from recforge.deploy.serve import create_app, parse_args

from .test_deploy_serve import serving
from .test_deploy_serve_ops import Samples, scrape, value, with_client

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HISTORY = [5, 9, 2]


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> DeployedModel:
    return load_model(tiny_run)


@pytest.fixture(scope="module")
def other_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run whose best checkpoint has other item embeddings (other answers, other version)."""
    run = tmp_path_factory.mktemp("other") / "run"
    shutil.copytree(tiny_run, run)
    ckpt = next(p for p in (run / "checkpoints").glob("*.ckpt") if p.stem != "last")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    g = torch.Generator().manual_seed(1)
    for tensor in state["state_dict"].values():
        if tensor.is_floating_point():
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.5)
    torch.save(state, ckpt)
    return run


def top_items(model: DeployedModel, history: list[int], k: int = 10) -> list[int]:
    recommender = Recommender(model)
    return recommender.recommend([Query(recommender.encode(history, raw_ids=False), k)])[0]["items"]


def test_admin_token_comes_from_the_option_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert admin_token(None) is None and admin_token("") is None and admin_token("a") == "a"
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert admin_token(None) == "from-env" and admin_token("given") == "given"
    assert authorised("Bearer s3cret-token", TOKEN) and authorised("bearer  s3cret-token", TOKEN)
    assert not authorised(None, TOKEN) and not authorised("s3cret-token", TOKEN)
    assert not authorised("Bearer s3cret-toke", TOKEN) and not authorised("Basic s3cret-token", TOKEN)


def test_every_answer_names_the_model_version_and_without_a_token_there_is_no_admin_endpoint(
        model: DeployedModel) -> None:
    version = checkpoint_version(model.checkpoint)

    async def calls(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post("/recommend", json={"history": HISTORY}),
                await client.post("/recommend", json={"history": [1], "k": 0}),
                await client.get("/health"), await client.get("/metrics"), await client.get("/nope"),
                await client.post("/admin/reload", headers=AUTH)]

    answers = with_client(create_app(model), calls)
    assert [a.status_code for a in answers] == [200, 422, 200, 200, 404, 404]
    assert [a.headers["x-model-version"] for a in answers] == [version] * 6
    assert len(version) == 12


def test_reload_needs_the_token_swaps_the_model_and_a_failed_reload_changes_nothing(
        model: DeployedModel, tiny_run: Path, other_run: Path) -> None:
    old, new = checkpoint_version(model.checkpoint), checkpoint_version(load_model(other_run).checkpoint)
    assert old != new
    app = create_app(model, admin_token=TOKEN)

    async def calls(client: httpx.AsyncClient) -> tuple[list[httpx.Response], Samples]:
        answers = [await client.post("/admin/reload", json={"checkpoint": str(other_run)}),
                   await client.post("/admin/reload", json={"checkpoint": str(other_run)},
                                     headers={"Authorization": "Bearer wrong"}),
                   await client.post("/recommend", json={"history": HISTORY}),
                   await client.post("/admin/reload", json={"checkpoint": str(other_run)}, headers=AUTH),
                   await client.post("/recommend", json={"history": HISTORY}),
                   await client.post("/admin/reload", json={"checkpoint": str(tiny_run / "nothing")}, headers=AUTH),
                   await client.post("/recommend", json={"history": HISTORY}),
                   await client.post("/admin/reload", headers=AUTH),  # no body: the model's own run again
                   await client.post("/recommend", json={"history": HISTORY})]
        return answers, await scrape(client)

    answers, samples = with_client(app, calls)
    assert [a.status_code for a in answers] == [403, 403, 200, 200, 200, 422, 200, 200, 200]
    assert answers[0].json()["detail"].startswith("POST /admin/reload needs the header 'Authorization: Bearer")
    assert [a.headers["x-model-version"] for a in answers] == [old, old, old, new, new, new, new, old, old]
    swapped = answers[3].json()
    assert (swapped["version"], swapped["previous"], swapped["num_items"]) == (new, old, 59)
    assert answers[5].json()["detail"].endswith("no such checkpoint file or run directory. The model serving is unchanged.")
    assert answers[2].json()["items"] == top_items(model, HISTORY) == answers[8].json()["items"]
    assert answers[4].json()["items"] == top_items(load_model(other_run), HISTORY) == answers[6].json()["items"]
    assert answers[4].json()["items"] != answers[2].json()["items"]
    assert value(samples, "recforge_model_reloads_total", result="ok") == 2
    assert value(samples, "recforge_model_reloads_total", result="failed") == 1
    assert value(samples, "recforge_http_requests_total", path="/admin/reload", status="403") == 2
    info = [dict(labels) for name, labels in samples if name == "recforge_model_info"]
    assert [i["version"] for i in info] == [old]  # the model serving now (the last reload went back)


def test_requests_queued_before_a_swap_are_answered_by_their_model(model: DeployedModel, other_run: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The scoring thread is held while two requests queue, the model is swapped, one more request comes:
    the first call scores the queued ones with the old model, the next call the late one with the new."""
    entered, release = threading.Event(), threading.Event()
    original, calls = Recommender.recommend, []

    def held(self: Recommender, queries: Any) -> list[dict[str, Any]]:
        calls.append((self.model.checkpoint, len(queries)))
        entered.set()
        release.wait(20)
        return original(self, queries)

    monkeypatch.setattr(Recommender, "recommend", held)
    app = create_app(model, limits=ServeLimits(timeout_seconds=30), admin_token=TOKEN)

    async def traffic(client: httpx.AsyncClient) -> list[httpx.Response]:
        first = asyncio.create_task(client.post("/recommend", json={"history": [1]}))
        await asyncio.to_thread(entered.wait, 20)  # the scoring thread holds request 1
        queued = [asyncio.create_task(client.post("/recommend", json={"history": HISTORY})) for _ in range(2)]
        await asyncio.sleep(0.2)
        reload = await client.post("/admin/reload", json={"checkpoint": str(other_run)}, headers=AUTH)
        late = asyncio.create_task(client.post("/recommend", json={"history": HISTORY}))
        await asyncio.sleep(0.2)
        release.set()
        return [reload, *await asyncio.gather(first, *queued, late)]

    reload, *answers = with_client(app, traffic)
    assert reload.status_code == 200 and [a.status_code for a in answers] == [200] * 4
    old, new = reload.json()["previous"], reload.json()["version"]
    assert [a.headers["x-model-version"] for a in answers] == [old, old, old, new]
    other = load_model(other_run)
    assert [(c.name, n) for c, n in calls] == [(model.checkpoint.name, 1), (model.checkpoint.name, 2),
                                               (other.checkpoint.name, 1)]
    assert answers[1].json()["items"] == top_items(model, HISTORY)
    assert answers[3].json()["items"] == top_items(other, HISTORY)


def test_the_admin_token_option_is_parsed(tiny_run: Path) -> None:
    assert parse_args([str(tiny_run), "--admin-token", "abc"]).admin_token == "abc"
    assert parse_args([str(tiny_run)]).admin_token is None


async def load(url: str, reloads: list[str], clients: int, seconds: float) -> tuple[Counter, dict[str, set]]:
    """``clients`` concurrent clients post /recommend for ``seconds`` while the model is reloaded from each of
    ``reloads`` in turn; (status counts, {version: set of answers to HISTORY})."""
    statuses: Counter = Counter()
    answers: dict[str, set] = {}
    stop = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                response = await client.post(f"{url}/recommend", json={"history": HISTORY})
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                continue
            statuses[response.status_code] += 1
            if response.status_code == 200:
                answers.setdefault(response.headers["x-model-version"], set()).add(tuple(response.json()["items"]))

    async with httpx.AsyncClient(timeout=30) as client:
        workers = [asyncio.create_task(client_loop(client)) for _ in range(clients)]
        for path in reloads:
            await asyncio.sleep(seconds / (len(reloads) + 1))
            swapped = await client.post(f"{url}/admin/reload", json={"checkpoint": path}, headers=AUTH)
            assert swapped.status_code == 200, swapped.text
        await asyncio.sleep(seconds / (len(reloads) + 1))
        stop.set()
        await asyncio.gather(*workers)
    return statuses, answers


def test_a_real_server_swapping_models_under_concurrent_load_fails_no_request(
        tiny_run: Path, other_run: Path, tmp_path: Path) -> None:
    with serving(tiny_run, tmp_path / "serve.log", {TOKEN_ENV: TOKEN}) as url:
        paths = [str(other_run), str(tiny_run)] * 3
        statuses, answers = asyncio.run(load(url, paths, clients=8, seconds=6.0))
    assert set(statuses) == {200} and statuses[200] > 100, statuses
    old, new = load_model(tiny_run), load_model(other_run)
    assert answers == {checkpoint_version(old.checkpoint): {tuple(top_items(old, HISTORY))},
                       checkpoint_version(new.checkpoint): {tuple(top_items(new, HISTORY))}}

"""Switching recforge-serve to a newer model while it answers requests.

The served model is a :class:`Served` (model, its recommender, its version) held by a :class:`ModelSlot`. A request
takes the slot's current ``Served`` once and is encoded, scored and answered by that one model; a reload builds the
next ``Served`` off the event loop and replaces the slot's reference in one assignment, so requests already queued
finish on the model they started with and later ones use the new one: none is dropped or mixes two models.
Every response carries ``X-Model-Version`` (the checkpoint's sha256 prefix, as ``recforge_model_info``): the
version that scored it for /recommend, the current one otherwise.

``POST /admin/reload`` exists only when the server was given an admin token (``--admin-token`` or the
``RECFORGE_ADMIN_TOKEN`` environment variable) and needs ``Authorization: Bearer <token>`` (else 403). Its body
``{"checkpoint": "<run dir or .ckpt>"}`` is optional: without it the path the server was started with is loaded
again (a run directory's best checkpoint, which a continued run may have replaced).
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recforge.deploy.index import IndexSpec, build_index
from recforge.deploy.metrics import checkpoint_version
from recforge.deploy.model import DeployedModel
from recforge.deploy.recommender import Recommender

VERSION_HEADER = "X-Model-Version"
TOKEN_ENV = "RECFORGE_ADMIN_TOKEN"


@dataclass(frozen=True)
class Served:
    """One model as served: its recommender (with its index) and version."""

    model: DeployedModel
    recommender: Recommender
    version: str  # checkpoint sha256, 12 hex


def serve(model: DeployedModel, index: IndexSpec) -> Served:
    """The recommender of ``model`` (building its index) and its version."""
    recommender = Recommender(model, index=build_index(model.scorer.decoder, index))
    return Served(model, recommender, checkpoint_version(model.checkpoint))


class ModelSlot:
    """The model answering new requests. ``current`` is replaced by one reference assignment (atomic)."""

    def __init__(self, served: Served) -> None:
        self.current = served

    def swap(self, served: Served) -> Served:
        """Serve ``served`` from now on; returns the model it replaced."""
        previous, self.current = self.current, served
        return previous


class ReloadRequest(BaseModel):
    """What to load: a run directory (its best checkpoint) or a .ckpt file; default: the server's start path."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: StrictStr | None = None


def admin_token(given: str | None) -> str | None:
    """The admin token: ``--admin-token``, else the environment variable, else none (no admin endpoint)."""
    token = given if given is not None else os.environ.get(TOKEN_ENV)
    return token or None


def authorised(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries the bearer token (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def reload_path(request: ReloadRequest | None, started_with: str | Path) -> str | Path:
    return started_with if request is None or request.checkpoint is None else request.checkpoint


class VersionHeader:
    """ASGI middleware: ``X-Model-Version`` of the current model on every response that has none yet."""

    def __init__(self, app: ASGIApp, slot: ModelSlot) -> None:
        self.app, self.slot = app, slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == VERSION_HEADER.lower().encode() for name, _ in headers):
                    headers.append((VERSION_HEADER.lower().encode(), self.slot.current.version.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)

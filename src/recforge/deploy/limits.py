"""What keeps recforge-serve answering under overload: body size limit (413), bounded queue and timeout (503).

- A request whose ``Content-Length`` exceeds ``max_body_bytes`` is refused with 413 before any of its body is
  read; a body sent without one (chunked) is read up to the limit and refused with 413 as soon as it passes it.
  Either way the body is never parsed, and the connection is closed.
- At most ``max_queue`` requests wait for the scoring thread; one more is refused at once with 503.
- A request not answered ``timeout_seconds`` after it was queued gets 503 and is dropped from the queue if it is
  still there. 503 rather than 504: the server is not a gateway; it is overloaded and the request may succeed on
  retry, which is what 503 with ``Retry-After`` (seconds) tells a client or load balancer.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MEBIBYTE = 1 << 20


@dataclass(frozen=True)
class ServeLimits:
    """Overload limits of one app (command line: --max-body-bytes, --max-queue, --timeout)."""

    max_body_bytes: int = MEBIBYTE
    max_queue: int = 256
    timeout_seconds: float = 5.0
    max_batch: int = 64
    retry_after_seconds: int = 1

    def problem(self) -> str | None:
        """Why these limits are unusable, or None."""
        if self.max_body_bytes < 1 or self.max_queue < 1 or self.max_batch < 1:
            return (f"--max-body-bytes ({self.max_body_bytes}), --max-queue ({self.max_queue}) and max_batch "
                    f"({self.max_batch}) must be at least 1")
        if not self.timeout_seconds > 0:
            return f"--timeout ({self.timeout_seconds}) must be a positive number of seconds"
        return None


class Overloaded(Exception):
    """A request refused because the server is busy: answered 503 with Retry-After."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None without one (or an unreadable one, which the server rejects)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_capped(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` in one message, then whatever the connection sends next (disconnect)."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


class RequestGuard:
    """ASGI middleware: refuses oversized bodies with 413 and reports every answer's status and duration."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, observe: Callable[[str, int, float], None]) -> None:
        self.app, self.max_body_bytes, self.observe = app, max_body_bytes, observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = time.perf_counter(), 500  # 500 unless a response starts (an exception is a 500)

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.guarded(scope, receive, noting)
        finally:
            self.observe(scope["path"], status, time.perf_counter() - began)

    async def guarded(self, scope: Scope, receive: Receive, send: Callable[[Message], Awaitable[None]]) -> None:
        declared = declared_length(scope)
        body = None if declared is not None and declared > self.max_body_bytes else await read_capped(receive, self.max_body_bytes)
        if body is None:
            too_large = JSONResponse({"detail": f"the request body is larger than the server's limit of "
                                                f"{self.max_body_bytes} bytes (--max-body-bytes)"},
                                     status_code=413, headers={"Connection": "close"})
            await too_large(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)

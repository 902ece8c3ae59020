"""Prometheus metrics of one recforge-serve app (``GET /metrics``), in a registry of its own.

| metric | type | labels |
|---|---|---|
| ``recforge_http_requests_total`` | counter: requests answered | path, status |
| ``recforge_http_errors_total`` | counter: answers with status >= 400 | path, status |
| ``recforge_http_request_duration_seconds`` | histogram: request to last response byte | path |
| ``recforge_scoring_batch_size`` | histogram: requests answered by one model call | |
| ``recforge_scoring_queue_depth`` | gauge: requests waiting for the scoring thread | |
| ``recforge_rejected_total`` | counter: 503 answers under overload | reason (queue_full, timeout) |
| ``recforge_model_info`` | info: the served model | model, version (sha256 of the checkpoint, 12 hex), dataset, num_items, index |
| ``recforge_model_load_seconds`` | gauge: time to load the model (and build its index) | |
| ``recforge_model_loaded_timestamp_seconds`` | gauge: when it was loaded (Unix time) | |
| ``recforge_model_reloads_total`` | counter: ``POST /admin/reload`` answers | result (ok, failed) |

The three model gauges describe the model serving now: a reload replaces them.

``path`` is the route (``/recommend``, ``/health``, ``/metrics``, ``/docs``, ``/openapi.json``) or ``other``, so
unknown URLs cannot grow the label set.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from recforge.deploy.model import DeployedModel

ROUTES = frozenset({"/recommend", "/health", "/metrics", "/docs", "/openapi.json", "/admin/reload"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def checkpoint_version(path: Path) -> str:
    """The first 12 hex digits of the checkpoint file's sha256: changes whenever the weights do."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def path_label(path: str) -> str:
    return path if path in ROUTES else "other"


class ServeMetrics:
    """The counters, histograms and gauges of one app, registered in ``self.registry`` (not the global one)."""

    def __init__(self, model: DeployedModel, index: str = "exact", load_seconds: float | None = None,
                 version: str | None = None) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("recforge_http_requests", "HTTP requests answered, by route and status code",
                                ["path", "status"], registry=registry)
        self.errors = Counter("recforge_http_errors", "HTTP answers with status >= 400, by route and status code",
                              ["path", "status"], registry=registry)
        self.latency = Histogram("recforge_http_request_duration_seconds", "Time from request to last response byte",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("recforge_scoring_batch_size", "Requests answered by one model call",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.queue_depth = Gauge("recforge_scoring_queue_depth", "Requests waiting for the scoring thread",
                                 registry=registry)
        self.rejected = Counter("recforge_rejected", "Requests answered 503 under overload, by reason",
                                ["reason"], registry=registry)
        self.info = Info("recforge_model", "The served model", registry=registry)
        self.load_seconds = Gauge("recforge_model_load_seconds", "Seconds spent loading the model and building its index",
                                  registry=registry)
        self.loaded_at = Gauge("recforge_model_loaded_timestamp_seconds", "Unix time the model was loaded",
                               registry=registry)
        self.reloads = Counter("recforge_model_reloads", "POST /admin/reload answers, by result", ["result"],
                               registry=registry)
        self.model_loaded(model, index, load_seconds, version)

    def model_loaded(self, model: DeployedModel, index: str = "exact", load_seconds: float | None = None,
                     version: str | None = None) -> None:
        """Describe ``model`` as the one serving (``version``: its checkpoint's, computed when not given)."""
        self.info.info({"model": model.name, "version": version or checkpoint_version(model.checkpoint),
                        "dataset": model.dataset, "num_items": str(model.num_items), "index": index})
        self.load_seconds.set(float("nan") if load_seconds is None else load_seconds)
        self.loaded_at.set(time.time())

    def observe(self, path: str, status: int, seconds: float) -> None:
        """One answered request."""
        label = path_label(path)
        self.requests.labels(label, str(status)).inc()
        if status >= 400:
            self.errors.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)

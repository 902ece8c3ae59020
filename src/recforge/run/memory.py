"""Peak memory of evaluation on the CPU: large score buffers go to their own pages while the model evaluates.

Full ranking allocates a few (B, N+1) float buffers per batch (scores, the history-masked copy, comparisons), e.g.
512 x 12,102 x 4 bytes = 24.8 MB on Beauty. glibc's malloc serves blocks below its mmap threshold from the heap,
and that threshold rises by itself up to 32 MB once such a block is freed: the buffers then land in the heap, among
the small tensors that outlive each batch, and the heap keeps growing through an evaluation pass. Measured on
Beauty LightGCN (one training epoch of 3 batches, then validation of 22,363 users): peak RSS 1,217 MiB, of which
about 490 MiB accumulate during validation; with this callback (1 MiB), 826 MiB.

The price is time: a mapped block is zeroed page by page each time it is taken. Beauty SASRec, 1 training step, one
validation and one test pass of 22,363 users, the whole command on a loaded 2-core machine: peak RSS 979-1,203 MiB
in 47-54 s without it; 774 MiB in 61-65 s at 1 MiB, 797 MiB in 62 s at 4 MiB, 950 MiB in 64 s at 16 MiB.
For the whole run (not only evaluation) the cost falls on training too (Beauty GRU4Rec, 200 steps: 40-46 s against
51-54 s), which is why :class:`EvalHeap` acts only around validation and test, and afterwards returns the heap's
free pages to the system (``malloc_trim``) and sets the training threshold back. It is therefore not in
``callbacks=default``; ``callbacks=low_memory`` adds it (benchmarks/results/results.md, "Peak memory of
evaluation").

Only glibc has ``mallopt``; elsewhere (macOS, musl) the callback does nothing and says so once in the log.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MIB = 1 << 20


def glibc() -> Any | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


class EvalHeap(Callback):
    """During validation and test, blocks of at least ``eval_threshold_mb`` MiB get their own pages (freed back to
    the system when the tensor is freed); after them, the heap's free pages are returned and blocks up to
    ``train_threshold_mb`` MiB come from the heap again (32 MiB is where glibc's own threshold settles).

    ``libc`` is for tests (an object with ``mallopt`` and ``malloc_trim``); by default the process's glibc."""

    def __init__(self, eval_threshold_mb: float = 4.0, train_threshold_mb: float = 32.0, libc: Any | None = None
                 ) -> None:
        super().__init__()
        for key, value in (("eval_threshold_mb", eval_threshold_mb), ("train_threshold_mb", train_threshold_mb)):
            if not 0 < value <= 32:  # glibc refuses thresholds above HEAP_MAX / 2 (32 MiB on 64-bit)
                raise ValueError(f"callbacks.eval_heap.{key} must be in (0, 32] MiB, not {value}")
        self.eval_bytes = int(eval_threshold_mb * MIB)
        self.train_bytes = int(train_threshold_mb * MIB)
        self.libc = libc if libc is not None else glibc()
        if self.libc is None:
            log.info("callbacks.eval_heap: this C library has no mallopt (not glibc); evaluation memory is left as is")

    def _evaluating(self) -> None:
        if self.libc is not None:
            self.libc.mallopt(M_MMAP_THRESHOLD, self.eval_bytes)

    def _evaluated(self) -> None:
        if self.libc is not None:
            self.libc.malloc_trim(0)
            self.libc.mallopt(M_MMAP_THRESHOLD, self.train_bytes)

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._evaluating()

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._evaluated()

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._evaluating()

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._evaluated()

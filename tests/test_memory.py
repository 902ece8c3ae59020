"""recforge.run.memory.EvalHeap: the mmap threshold around evaluation, with a recording C library and glibc's own."""
from __future__ import annotations

import pytest
import torch

from recforge.run.memory import M_MMAP_THRESHOLD, EvalHeap, glibc


class RecordingLibc:
    """Stands in for glibc: records every mallopt / malloc_trim call and succeeds (glibc returns 1)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_threshold_is_lowered_for_evaluation_and_restored_after_a_trim():
    libc = RecordingLibc()
    heap = EvalHeap(eval_threshold_mb=4, train_threshold_mb=32, libc=libc)
    assert M_MMAP_THRESHOLD == -3  # glibc malloc.h
    heap.on_validation_epoch_start(None, None)
    assert libc.calls == [("mallopt", -3, 4 * 1024 * 1024)]
    heap.on_validation_epoch_end(None, None)
    assert libc.calls[1:] == [("malloc_trim", 0), ("mallopt", -3, 32 * 1024 * 1024)]
    libc.calls.clear()
    heap.on_test_epoch_start(None, None)
    heap.on_test_epoch_end(None, None)
    assert libc.calls == [("mallopt", -3, 4194304), ("malloc_trim", 0), ("mallopt", -3, 33554432)]


def test_fractional_thresholds_are_bytes():
    heap = EvalHeap(eval_threshold_mb=0.5, train_threshold_mb=1.25, libc=RecordingLibc())
    assert (heap.eval_bytes, heap.train_bytes) == (524288, 1310720)


@pytest.mark.parametrize("key,kwargs", [("eval_threshold_mb", {"eval_threshold_mb": 0}),
                                        ("eval_threshold_mb", {"eval_threshold_mb": -1}),
                                        ("train_threshold_mb", {"train_threshold_mb": 33})])
def test_bad_thresholds_name_their_key(key, kwargs):
    with pytest.raises(ValueError, match=rf"^callbacks\.eval_heap\.{key} must be in \(0, 32\] MiB"):
        EvalHeap(libc=RecordingLibc(), **kwargs)


def test_without_glibc_the_callback_does_nothing(monkeypatch, caplog):
    monkeypatch.setattr("recforge.run.memory.glibc", lambda: None)
    with caplog.at_level("INFO", logger="recforge.run.memory"):
        heap = EvalHeap()
    assert heap.libc is None
    assert "has no mallopt" in caplog.text
    heap.on_validation_epoch_start(None, None)  # nothing to call: no error
    heap.on_validation_epoch_end(None, None)


def test_real_glibc_accepts_the_thresholds_and_tensors_still_work():
    libc = glibc()
    if libc is None:
        pytest.skip("this C library is not glibc")
    heap = EvalHeap(eval_threshold_mb=1, train_threshold_mb=32)
    assert libc.mallopt(M_MMAP_THRESHOLD, heap.eval_bytes) == 1  # glibc accepts the value
    heap.on_validation_epoch_start(None, None)
    scores = torch.arange(512 * 4096, dtype=torch.float32).reshape(512, 4096)  # 8 MiB: its own mapping now
    assert float(scores[-1, -1]) == 512 * 4096 - 1
    del scores
    heap.on_validation_epoch_end(None, None)
    assert libc.mallopt(M_MMAP_THRESHOLD, heap.train_bytes) == 1

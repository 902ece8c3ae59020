"""benchmarks/compress.py: parameter counts (shared tensors once, zeros apart) and the table it writes."""
from __future__ import annotations

import torch
from torch import nn


def test_parameter_counts_count_shared_weights_once_and_zeros_apart(project_script):
    bench = project_script("benchmarks/compress.py")
    first, second = nn.Linear(3, 2), nn.Linear(3, 2, bias=False)
    second.weight = first.weight  # tied: 6 weights + 2 biases in all
    with torch.no_grad():
        first.weight.fill_(1.0)
        first.weight[0] = 0.0  # 3 of the 6 weights are zero
        first.bias.copy_(torch.tensor([1.0, 2.0]))
    assert bench.parameter_counts(nn.Sequential(first, second)) == (8, 5)


def test_table_has_one_row_per_export(project_script):
    bench = project_script("benchmarks/compress.py")
    row = {"model": "teacher", "variant": "int8", "params": 1500, "nonzero": 750, "file_mb": 0.5, "gzip_mb": 0.25,
           "ms_batch1": 1.234, "ms_batch256": 12.34, "ndcg@10": 0.11111, "hr@10": 0.2}
    lines = bench.table([row]).splitlines()
    assert lines[2] == "| teacher | int8 | 1.5 K (0.8 K) | 0.500 | 0.250 | 1.23 | 12.3 | 0.1111 | 0.2000 |"

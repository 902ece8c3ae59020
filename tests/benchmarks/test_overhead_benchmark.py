"""benchmarks/overhead.py: the bare PyTorch loop trains on exactly recforge's batches, with the same losses."""
from __future__ import annotations

import argparse
import copy


def test_bare_loop_sees_recforge_batches_across_bucket_pools_and_epochs(project_script):
    bench = project_script("benchmarks/overhead.py")
    # 300 generated users -> 83 training windows of batch 4 per epoch; the length-bucket sampler starts a new pool
    # every 50 batches (drawing from the global random state), so 100 steps cross a pool and an epoch boundary.
    overrides = ["dataset.reader.num_users=300", "dataset.batch_size=4", "trainer.max_epochs=3"]
    cfg = bench.compose_config("synthetic", None, overrides, compiled=False)
    bench.seed_all(cfg.seed)
    datamodule, initial = bench.build(cfg)
    per_epoch = len(datamodule.train_dataloader())
    assert 50 < per_epoch < 100
    args = argparse.Namespace(steps=100, warmup=2, eval_runs=0, seed=cfg.seed)
    initial = copy.deepcopy(initial)
    rec = bench.recforge_repeat(cfg, initial, datamodule, args, compiled=False)
    bare = bench.bare_train(initial, datamodule, args)
    # the first batch of each epoch is not timed (an interval spans two batches of one epoch): 100 + 2 + 1 batches
    assert len(rec["batches"]) == len(bare["batches"]) == 103
    assert bench.fingerprint(rec["batches"]) == bench.fingerprint(bare["batches"])
    assert rec["losses"] == bare["losses"]  # bit-identical, step by step (dropout draws in the same order)
    assert len(rec["step_seconds"]) == len(bare["step_seconds"]) == 100

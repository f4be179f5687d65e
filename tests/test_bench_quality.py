"""bench/quality.py's wiring: both arms train a few steps on the same views and it prints its one JSON line.

No accuracy is checked here (a few steps learn nothing): the figures are in BENCHMARKS.md.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfssl.data.images import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("method", ["simclr", "moco_v2", "byol", "simsiam", "barlow_twins", "vicreg"])
def test_quality_bench_runs_both_arms(method):
    pytest.importorskip("lightly")
    command = [sys.executable, str(ROOT / "bench" / "quality.py"), "--method", method, "--steps", "2",
               "--batch_size", "16", "--seeds", "0", "--max_train_samples", "256", "--max_eval_samples", "128",
               "--no_record"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout
    result = json.loads(lines[0])
    assert result["method"] == method and result["steps"] == 2 and result["seeds"] == [0]
    for arm in ("hfssl", "lightly"):
        assert 0.0 <= result[f"{arm}_knn_top1"] <= 1.0
        assert result[f"{arm}_effective_rank"] >= 1.0 and result[f"{arm}_embedding_std"] >= 0.0
    assert result["throughput_ratio"] > 0
    # the two arms started from one backbone: the untrained figures are measured once, before either trains
    assert set(result["runs"][0]) >= {"initial", "hfssl", "lightly"}

"""bench/quality.py's wiring: for every method both arms train 2 steps on the same views and it prints one JSON line.

No accuracy is checked here (two steps learn nothing): the figures are in bench/results/quality.jsonl.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfssl.data.images import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def bench_methods() -> list[str]:
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(module.SETTINGS)


METHODS = ["barlow_twins", "byol", "dino", "moco_v2", "simclr", "simsiam", "swav", "vicreg"]


def test_every_method_is_wired():
    assert bench_methods() == METHODS


@pytest.mark.slow
@pytest.mark.skipif(not all(os.path.isfile(os.path.join(FASHION_MNIST_DIR, name)) for name in FILES),
                    reason=f"Fashion-MNIST IDX files not in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)")
@pytest.mark.parametrize("method", METHODS)
def test_quality_bench_runs_both_arms(method):
    pytest.importorskip("lightly")
    command = [sys.executable, str(ROOT / "bench" / "quality.py"), "--method", method, "--steps", "2",
               "--batch_size", "16", "--seeds", "0", "--max_train_samples", "256", "--max_eval_samples", "128",
               "--no_record"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout
    result = json.loads(lines[0])
    assert result["method"] == method and result["steps"] == 2 and result["seeds"] == [0]
    assert set(result) >= {"hfssl_knn_top1", "lightly_knn_top1", "hfssl_minus_lightly_points", "untrained_knn_top1",
                           "hfssl_embedding_std", "lightly_embedding_std", "hfssl_effective_rank",
                           "lightly_effective_rank", "hfssl_images_per_second", "lightly_images_per_second",
                           "throughput_ratio", "settings", "runs"}
    for arm in ("hfssl", "lightly"):
        assert 0.0 <= result[f"{arm}_knn_top1"] <= 1.0
        assert result[f"{arm}_effective_rank"] >= 1.0 and result[f"{arm}_embedding_std"] >= 0.0
    assert result["throughput_ratio"] > 0
    # the two arms start from one backbone, measured once before either trains
    assert set(result["runs"][0]) >= {"initial", "hfssl", "lightly"}
    if result["settings"]["optimizer"] == "lars":  # the two LARS give the same updates
        assert result["runs"][0]["lars_max_relative_difference"] < 1e-3

"""Weighted-kNN evaluation speed: hfssl's `knn_predict` against scikit-learn's `KNeighborsClassifier` with the same
metric and vote (cosine, brute force, weight exp(cosine / T)), on Fashion-MNIST.

    python bench/eval_speed.py                        # 60k train images as memory, 10k test queries, 128-d features
    python bench/eval_speed.py --feature_dim 0        # raw 784-d pixels

Features: the raw pixels (scaled to [0, 1]) times a fixed random Gaussian projection to --feature_dim (seeded), the
same float32 arrays for both. Figure: seconds to classify the 10k queries (fit included for scikit-learn, which only
stores the memory with brute force), median of --repeats, both in the same process. Also reported: the top-1 of each
and the fraction of queries on which both predict the same class (ties in the votes may break differently).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hfssl.data.images import FASHION_MNIST_DIR, _read_idx
from hfssl.evaluation.knn import knn_predict


def load(split: str, feature_dim: int) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(os.path.join(FASHION_MNIST_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(FASHION_MNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    if feature_dim:
        projection = np.random.default_rng(0).standard_normal((pixels.shape[1], feature_dim)).astype(np.float32)
        pixels = pixels @ projection
    return pixels, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feature_dim", type=int, default=128, help="random projection size; 0 keeps the 784 pixels")
    parser.add_argument("--k", type=int, default=20, help="neighbours (DINO: 20)")
    parser.add_argument("--temperature", type=float, default=0.07, help="vote temperature (DINO: 0.07)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from sklearn.neighbors import KNeighborsClassifier

    memory, memory_labels = load("train", args.feature_dim)
    queries, query_labels = load("test", args.feature_dim)

    def run_hfssl() -> np.ndarray:
        scores = knn_predict(torch.from_numpy(memory), torch.from_numpy(memory_labels), torch.from_numpy(queries),
                             num_classes=10, k=args.k, temperature=args.temperature)
        return scores.argmax(dim=1).numpy()

    def run_sklearn() -> np.ndarray:
        weights = lambda distances: np.exp((1.0 - distances) / args.temperature)
        classifier = KNeighborsClassifier(n_neighbors=args.k, metric="cosine", algorithm="brute", weights=weights)
        return classifier.fit(memory, memory_labels).predict(queries)

    timings: dict[str, list[float]] = {"hfssl": [], "sklearn": []}
    predictions = {}
    for _ in range(args.repeats):
        for name, run in (("hfssl", run_hfssl), ("sklearn", run_sklearn)):
            start = time.perf_counter()
            predictions[name] = run()
            timings[name].append(time.perf_counter() - start)
    hfssl_s, sklearn_s = statistics.median(timings["hfssl"]), statistics.median(timings["sklearn"])
    print(json.dumps({
        "benchmark": "knn_eval_fashion_mnist",
        "memory": len(memory), "queries": len(queries), "feature_dim": memory.shape[1], "k": args.k,
        "temperature": args.temperature, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
        "hfssl_seconds": round(hfssl_s, 3), "sklearn_seconds": round(sklearn_s, 3),
        "speedup": round(sklearn_s / hfssl_s, 2),
        "hfssl_top1": float((predictions["hfssl"] == query_labels).mean()),
        "sklearn_top1": float((predictions["sklearn"] == query_labels).mean()),
        "prediction_agreement": float((predictions["hfssl"] == predictions["sklearn"]).mean()),
    }))


if __name__ == "__main__":
    main()

"""Classification metrics as `evaluate` modules defined in Python, since `evaluate.load("accuracy")` fetches its
script from the Hub, which offline machines (and CI here) cannot do.

Legend: N examples, K classes.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np


class TopKAccuracy(evaluate.Metric):
    """Top-k accuracy (in [0, 1]) of class scores.

    Args (of `compute` / `add_batch`):
        predictions (`list` of score rows, shape `(N, K)`): logits or probabilities per class.
        references (`list[int]`, shape `(N,)`): the true classes.
        k (`int` or `tuple[int, ...]`, defaults to 1): the k of each reported accuracy.

    Returns:
        `{"accuracy": top-1}` when k is 1, else `{"top{k}_accuracy": ...}` for each k.

    Example:
        >>> TopKAccuracy().compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1])
        {'accuracy': 0.5}
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Top-k accuracy of class scores (the true class among the k highest scores).",
            citation="",
            inputs_description="predictions: (N, K) class scores; references: (N,) integer classes; k: int or tuple.",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k: int | tuple[int, ...] = 1) -> dict[str, float]:
        scores, labels = np.asarray(predictions, dtype=np.float32), np.asarray(references)
        if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
            raise ValueError(
                f"TopKAccuracy needs predictions of shape (N, K) and references of shape (N,); got {scores.shape} and "
                f"{labels.shape}. Pass the logits, not the argmax."
            )
        ks = (k,) if isinstance(k, int) else tuple(k)
        if any(value < 1 or value > scores.shape[1] for value in ks):
            raise ValueError(f"k={k} must lie in [1, {scores.shape[1]}] (the number of classes).")
        order = np.argsort(-scores, axis=1, kind="stable")
        hits = order == labels[:, None]
        results = {f"top{value}_accuracy": float(hits[:, :value].any(axis=1).mean()) for value in ks}
        return {"accuracy": results["top1_accuracy"]} if ks == (1,) else results

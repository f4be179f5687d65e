"""Pictures of a pretraining run, as PNG files (matplotlib's Agg backend: no display needed).

- `plot_embeddings`: a 2-D t-SNE (van der Maaten & Hinton 2008, scikit-learn) of features, coloured by label.
- `plot_training_curves`: loss, kNN / linear-probe accuracy and the collapse signals against the step, read from
  `trainer.state.log_history` (or the `trainer_state.json` of a checkpoint).

Legend: N points, D feature dim.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

COLLAPSE_SIGNALS = ("embedding/std", "embedding/effective_rank")
ACCURACY_SUFFIX = "/top1"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_embeddings(
    features: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    path: str | Path,
    class_names: Sequence[str] | None = None,
    max_points: int = 2000,
    perplexity: float = 30.0,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Write a t-SNE map of the features, one colour per label.

    Args:
        features (`torch.Tensor` or `np.ndarray` of shape `(N, D)`), labels (of shape `(N,)`): integer labels.
        path (`str` or `Path`): the PNG to write (folders are created).
        class_names (sequence of `str`, *optional*): legend entries, indexed by label.
        max_points (`int`, defaults to 2000): a seeded random subset above this (t-SNE is quadratic in N).
        perplexity (`float`, defaults to 30, scikit-learn's default): capped at (N - 1) / 3 for small N.
        seed (`int`, defaults to 0): the subset and t-SNE's initialisation.
        title (`str`, *optional*).

    Returns:
        The written path.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float32)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] < 4:
        raise ValueError(
            f"plot_embeddings expects features (N, D) and labels (N,) with N >= 4; got {features.shape} and "
            f"{labels.shape}."
        )
    rng = np.random.default_rng(seed)
    if len(features) > max_points:
        keep = np.sort(rng.choice(len(features), max_points, replace=False))
        features, labels = features[keep], labels[keep]
    perplexity = min(perplexity, (len(features) - 1) / 3)
    # One OpenMP thread: after torch has run, its idle OpenMP workers keep spinning on the cores and starve the
    # Barnes-Hut gradient's threads, which then wait at every barrier (seen as a 100x slowdown on 2 cores).
    with threadpool_limits(limits=1, user_api="openmp"):
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        points = tsne.fit_transform(features)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 6))
    colours = plt.get_cmap("tab10" if len(np.unique(labels)) <= 10 else "tab20")
    for index, label in enumerate(np.unique(labels)):
        selected = labels == label
        name = class_names[int(label)] if class_names is not None else str(label)
        axis.scatter(points[selected, 0], points[selected, 1], s=6, color=colours(index % colours.N), label=name)
    axis.legend(markerscale=3, fontsize=7, loc="best")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title or f"t-SNE of {features.shape[1]}-d features ({len(features)} points)")
    return _save(figure, plt, path)


def plot_training_curves(log_history: Sequence[Mapping[str, Any]] | str | Path, path: str | Path) -> Path:
    """Write the training loss, the accuracies (`"*/top1"` metrics, e.g. `"eval_knn/top1"`) and the collapse
    signals (`"embedding/std"`, `"embedding/effective_rank"`) against the step, one panel each (panels without data are left out).

    Args:
        log_history (sequence of `dict`, or a path): `trainer.state.log_history`, or a checkpoint's
            `trainer_state.json`.
        path (`str` or `Path`): the PNG to write (folders are created).

    Returns:
        The written path.
    """
    if isinstance(log_history, (str, Path)):
        log_history = json.loads(Path(log_history).read_text())["log_history"]
    panels: list[tuple[str, list[str]]] = [("loss", ["loss", "eval_loss"])]
    keys = sorted({key for entry in log_history for key in entry})
    panels.append(("accuracy", [key for key in keys if key.endswith(ACCURACY_SUFFIX)]))
    for signal in COLLAPSE_SIGNALS:  # one panel each: their scales differ
        panels.append((signal, [key for key in keys if key.removeprefix("eval_") == signal]))
    series = {
        key: [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        for _, names in panels
        for key in names
    }
    panels = [(title, [key for key in names if series.get(key)]) for title, names in panels]
    panels = [(title, names) for title, names in panels if names]
    if not panels:
        raise ValueError(
            "log_history has no loss, '*/top1' or 'embedding/std' entry with a step; train with logging_steps set "
            f"(keys found: {keys})."
        )
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for axis, (title, names) in zip(axes[0], panels):
        for key in names:
            steps, values = zip(*series[key])
            axis.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=key)
        axis.set_xlabel("step")
        axis.set_title(title)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, plt, path)


def _save(figure: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

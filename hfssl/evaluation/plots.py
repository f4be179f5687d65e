"""Pictures of a pretraining run, as PNG files (matplotlib's Agg backend: no display needed): a t-SNE (van der Maaten
& Hinton 2008) of the features, the training curves and collapse signals, and rows of images (e.g. MAE's outputs).

Each `plot_*` writes the figure its `*_figure` function returns (which tests read: axes, labels, ticks, images).

Legend: N points or images, D feature dim, P embedding dim, C channels, H x W image size.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

COLLAPSE_SIGNALS = ("embedding/std", "embedding/effective_rank")
ACCURACY_SUFFIX = "/top1"
Y_LABELS = {"train loss": "loss (per-batch mean)", "eval loss": "loss (mean over the eval set)",
            "learning rate": "learning rate", "accuracy": "top-1 accuracy", "embedding/std": "per-dimension std",
            "embedding/effective_rank": "effective rank (RankMe)"}  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_embeddings(features: Any, labels: Any, path: str | Path, **kwargs: Any) -> Path:
    """Write `embeddings_figure(features, labels, **kwargs)` to `path` (a PNG; folders are created) and return it."""
    return _save(embeddings_figure(features, labels, **kwargs), path)


def embeddings_figure(
    features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | Sequence[int],
    class_names: Sequence[str] | None = None, max_points: int = 2000, perplexity: float = 30.0, seed: int = 0,
    title: str | None = None, model_name: str | None = None, knn_top1: float | None = None, k: int | None = None,
) -> Any:
    """A t-SNE map of the features, one colour per label: a `matplotlib.figure.Figure` with one axes.

    Args:
        features (`torch.Tensor` or `np.ndarray` of shape `(N, D)`), labels (of shape `(N,)`): integer labels.
        class_names (sequence of `str`, *optional*): legend entries, indexed by label.
        max_points (`int`, defaults to 2000): a seeded random subset above this (t-SNE is quadratic in N).
        perplexity (`float`, defaults to 30, scikit-learn's default): capped at (N - 1) / 3 for small N.
        seed (`int`, defaults to 0): the subset and t-SNE's initialisation.
        title (`str`, *optional*): replaces the default title, which names `model_name`, the points and
            dimensions, and `knn_top1` (with `k`) when given.
        model_name (`str`, *optional*), knn_top1 (`float` in [0, 1], *optional*), k (`int`, *optional*): for the title.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = np.asarray(torch.as_tensor(features).detach().cpu(), dtype=np.float32)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] < 4:
        raise ValueError(
            f"plot_embeddings expects features (N, D) and labels (N,) with N >= 4; got {features.shape} and "
            f"{labels.shape}."
        )
    if len(features) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(features), max_points, replace=False))
        features, labels = features[keep], labels[keep]
    perplexity = min(perplexity, (len(features) - 1) / 3)
    # One OpenMP thread: after torch has run, its idle OpenMP workers keep spinning on the cores and starve the
    # Barnes-Hut gradient's threads, which then wait at every barrier (seen as a 100x slowdown on 2 cores).
    with threadpool_limits(limits=1, user_api="openmp"):
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        points = tsne.fit_transform(features)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 6))
    colours = plt.get_cmap("tab10" if len(np.unique(labels)) <= 10 else "tab20")
    for index, label in enumerate(np.unique(labels)):
        selected = labels == label
        name = class_names[int(label)] if class_names is not None else str(label)
        axis.scatter(points[selected, 0], points[selected, 1], s=6, color=colours(index % colours.N), label=name)
    axis.legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title="label")
    axis.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
    if title is None:
        title = f"t-SNE of {model_name}" if model_name else "t-SNE"
        title += f": {len(features)} points, {features.shape[1]}-d features"
        if knn_top1 is not None:
            title += f"\nkNN top-1 {knn_top1:.1%}" + (f" (k={k})" if k is not None else "")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_training_curves(
    log_history: Sequence[Mapping[str, Any]] | str | Path, path: str | Path, **kwargs: Any
) -> Path:
    """Write `training_curves_figure(log_history, **kwargs)` to `path` (a PNG; folders are created) and return it."""
    return _save(training_curves_figure(log_history, **kwargs), path)


def training_curves_figure(
    log_history: Sequence[Mapping[str, Any]] | str | Path, embedding_dim: int | None = None,
    train_batch_size: int | None = None,
) -> Any:
    """A `matplotlib.figure.Figure` of panels against the optimizer step (integer ticks), up to 3 a row, each with a
    y label, those without data left out: "train loss" (`loss`), "eval loss" (`eval_loss`, its own axes: a mean over
    the eval set, not over one training batch), "learning rate", "accuracy" (`"*/top1"` metrics, e.g.
    `"eval_knn/top1"`), "embedding/std" (with a dashed line at the healthy 1/sqrt(P) of L2-normalised P-dim
    embeddings when P is known) and "embedding/effective_rank".

    Args:
        log_history (sequence of `dict`, or a path): `trainer.state.log_history`, or a checkpoint's
            `trainer_state.json` (whose `train_batch_size` then labels the train loss).
        embedding_dim (`int`, *optional*): P; by default the `"embedding/dim"` an `SSLTrainer` logs once.
        train_batch_size (`int`, *optional*): the per-device batch size, shown in the train-loss title.

    Raises:
        ValueError: when no entry has a step and one of those quantities.
    """
    if isinstance(log_history, (str, Path)):
        state = json.loads(Path(log_history).read_text())
        log_history, train_batch_size = state["log_history"], train_batch_size or state.get("train_batch_size")
    keys = sorted({key for entry in log_history for key in entry})
    panels = [("train loss", ["loss"]), ("eval loss", ["eval_loss"]), ("learning rate", ["learning_rate"]),
              ("accuracy", [key for key in keys if key.endswith(ACCURACY_SUFFIX)])]
    # one panel per collapse signal: their scales differ
    panels += [(signal, [key for key in keys if key.removeprefix("eval_") == signal]) for signal in COLLAPSE_SIGNALS]
    series = {key: [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
              for key in keys}  # fmt: skip
    panels = [(title, [key for key in names if series.get(key)]) for title, names in panels]
    panels = [(title, names) for title, names in panels if names]
    if not any(title != "learning rate" for title, _ in panels):
        raise ValueError(
            "log_history has no loss, '*/top1' or 'embedding/std' entry with a step; train with logging_steps set "
            f"(keys found: {keys})."
        )
    if embedding_dim is None:
        embedding_dim = next((int(entry["embedding/dim"]) for entry in log_history if "embedding/dim" in entry), None)
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.remove()
    for axis, (panel, names) in zip(axes.flat, panels):
        title = panel
        for key in names:
            steps, values = zip(*series[key])
            axis.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=key)
        if panel == "train loss" and train_batch_size:
            title = f"train loss (batches of {train_batch_size} per device)"
        if panel == "embedding/std" and embedding_dim:
            healthy = 1.0 / math.sqrt(embedding_dim)
            axis.axhline(healthy, color="grey", linestyle="--", linewidth=1,
                         label=f"healthy: 1/sqrt(P) = {healthy:.3f}\n(L2-normalised, P={embedding_dim})")
            axis.set_ylim(bottom=0)
        if panel == "accuracy":
            axis.set_ylim(0, 1)
        if panel == "learning rate":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set(xlabel="optimizer step", ylabel=Y_LABELS[panel])
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def unnormalize(pixel_values: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo a per-channel normalisation: `pixel_values * std + mean`, clamped to [0, 1], float32 on CPU.

    Args:
        pixel_values (`torch.Tensor` of shape `(N, C, H, W)`): normalised images.
        mean, std (sequence of `float`): one value per channel (C of them), or one value for all channels.
    """
    channels = pixel_values.shape[1]
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ValueError(
            f"images with {channels} channels cannot be un-normalised with mean={tuple(mean)} and std={tuple(std)}: "
            f"pass 1 or {channels} values each (those of the collator that normalised them)."
        )
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (pixel_values.detach().float().cpu() * std_tensor + mean_tensor).clamp(0, 1)


def plot_reconstructions(rows: Mapping[str, torch.Tensor], mean: Sequence[float], std: Sequence[float],
                         path: str | Path, **kwargs: Any) -> Path:
    """Write `reconstructions_figure(rows, mean, std, **kwargs)` to `path` (a PNG; folders are created) and return
    it. For MAE: `{"original": x, "masked input": x * (1 - mask), "reconstruction": y, "visible + reconstructed":
    x * (1 - mask) + y * mask}` with the collator's `mean` and `std`."""
    return _save(reconstructions_figure(rows, mean, std, **kwargs), path)


def reconstructions_figure(
    rows: Mapping[str, torch.Tensor], mean: Sequence[float], std: Sequence[float], grayscale: bool | None = None
) -> Any:
    """A grid of images: one row per entry of `rows` (named on the left), one column per image, each image
    un-normalised (`unnormalize`) and shown pixel for pixel square (aspect 1).

    Args:
        rows (`Mapping[str, torch.Tensor]`): row name -> normalised images of shape `(N, C, H, W)` (C 1 or 3; the
            same N, H, W in every row).
        mean, std (sequence of `float`): the normalisation, 1 or C values.
        grayscale (`bool`, *optional*): show in grayscale (the luma of 3 channels); by default when C is 1, or when
            the first row's 3 channels are equal after un-normalising (grayscale images replicated to RGB).

    Returns:
        The `matplotlib.figure.Figure`: len(rows) x N axes, each holding one image, (H, W) with the "gray" colour map
        for grayscale, (H, W, 3) otherwise.
    """
    if not rows:
        raise ValueError("reconstructions_figure needs at least one row of images, e.g. {'original': pixel_values}.")
    images = {name: unnormalize(values, mean, std) for name, values in rows.items()}
    shapes = {tuple(values.shape[0:1] + values.shape[2:]) for values in images.values()}
    if len(shapes) != 1 or any(values.ndim != 4 or values.shape[1] not in (1, 3) for values in images.values()):
        raise ValueError(
            "reconstructions_figure expects every row as (N, C, H, W) with C 1 or 3 and the same N, H and W; got "
            f"{ {name: tuple(values.shape) for name, values in rows.items()} }."
        )
    first = next(iter(images.values()))
    if grayscale is None:
        grayscale = first.shape[1] == 1 or bool((first.amax(dim=1) - first.amin(dim=1)).max() < 1.0 / 255)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    count, height, width = first.shape[0], first.shape[2], first.shape[3]
    plt = _pyplot()
    cell, label_width, margin = 1.3, 1.6, 0.1  # inches: the longer image side, the row names' column, the border
    figure_width = cell * count * width / max(height, width) + label_width + margin
    figure_height = cell * len(images) * height / max(height, width) + 2 * margin
    figure, axes = plt.subplots(len(images), count, squeeze=False, figsize=(figure_width, figure_height))
    figure.subplots_adjust(left=label_width / figure_width, right=1 - margin / figure_width, wspace=0.05, hspace=0.05,
                           bottom=margin / figure_height, top=1 - margin / figure_height)
    for row, (name, values) in zip(axes, images.items()):
        if grayscale:
            values = values.mean(dim=1) if values.shape[1] == 1 else (values * luma).sum(dim=1)
        for index, axis in enumerate(row):
            if grayscale:
                axis.imshow(values[index].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                axis.imshow(values[index].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set(aspect="equal", xticks=[], yticks=[])
        row[0].set_ylabel(textwrap.fill(name, 14), rotation=0, ha="right", va="center", fontsize=9)
    return figure


def _save(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)
    return path

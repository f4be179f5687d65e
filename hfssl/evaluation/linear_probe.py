"""Linear probe: a linear classifier trained on frozen, precomputed features, the standard SSL evaluation (SimCLR
section 4, MoCo, DINO), with a small learning-rate / weight-decay sweep chosen on a held-out part of the train set.

Legend: N train features, Q test features, D feature dim, C classes, S sweep settings.

Features are standardised with the train set's mean and std (as a BatchNorm without affine in front of the linear
layer, MAE appendix A.2), then every sweep setting trains its own linear head in the same pass over the data (AdamW,
cosine learning rate). The best setting on the validation part is retrained on the whole train set and scored on
the test set.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LinearProbeResult:
    """What `linear_probe` returns.

    Attributes:
        accuracy (`float`): top-1 on the test features, in [0, 1] (without a test set: the validation
            top-1 of the selected setting, or the train top-1 when there was no sweep).
        learning_rate (`float`), weight_decay (`float`): the selected setting.
        validation_accuracy (`dict[tuple[float, float], float]`): top-1 on the validation part, per setting.
        classifier (`nn.Sequential`): standardisation and linear layer, mapping raw features (B, D) to logits (B, C).
    """

    accuracy: float
    learning_rate: float
    weight_decay: float
    validation_accuracy: dict[tuple[float, float], float] = field(default_factory=dict)
    classifier: nn.Module | None = None


class Standardize(nn.Module):
    """`(x - mean) / std` with the fixed statistics (D,) of the features (N, D) it is built from, as a module so the
    probe is one `nn.Sequential`."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", features.mean(dim=0))
        self.register_buffer("std", features.std(dim=0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


def _train_heads(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, settings: Sequence[tuple[float, float]],
    epochs: int, batch_size: int, seed: int,
) -> list[nn.Linear]:
    """One linear head per (learning rate, weight decay) setting, trained together on standardised features (N, D).

    Steps of under 2**22 multiply-adds run on one CPU thread, where the synchronisation of torch's thread pool
    would cost more than the arithmetic."""
    threads = torch.get_num_threads()
    if features.device.type == "cpu" and batch_size * features.shape[1] * num_classes * len(settings) < 2**22:
        torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(seed)
        heads, groups = [], []
        for learning_rate, weight_decay in settings:
            head = nn.Linear(features.shape[1], num_classes)
            with torch.no_grad():
                head.weight.normal_(0.0, 0.01, generator=generator)  # MoCo v3 / MAE: N(0, 0.01) init, zero bias
                head.bias.zero_()
            heads.append(head)
            groups.append({"params": list(head.parameters()), "lr": learning_rate, "weight_decay": weight_decay})
        optimizer = torch.optim.AdamW(groups)
        total_steps = epochs * math.ceil(len(features) / batch_size)
        cosine = lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        for _ in range(epochs):
            order = torch.randperm(len(features), generator=generator)
            for start in range(0, len(features), batch_size):
                index = order[start : start + batch_size]
                batch, targets = features[index], labels[index]
                loss = sum(F.cross_entropy(head(batch), targets) for head in heads)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    finally:
        torch.set_num_threads(threads)
    return heads


def _accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (head(features).argmax(dim=1) == labels).float().mean().item()


def linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None, learning_rates: Sequence[float] = (1e-3, 1e-2, 1e-1),
    weight_decays: Sequence[float] = (0.0, 1e-4), epochs: int = 100, batch_size: int = 256,
    validation_fraction: float = 0.1, seed: int = 0,
) -> LinearProbeResult:
    """Train a linear classifier on frozen features, choosing learning rate and weight decay on a validation split;
    return a `LinearProbeResult` with the test (or validation) top-1 and a classifier taking raw features.

    Args:
        train_features (`torch.Tensor` of shape `(N, D)`), train_labels (`torch.Tensor` of shape `(N,)`): integers.
        test_features (`torch.Tensor` of shape `(Q, D)`, *optional*), test_labels (`torch.Tensor` of shape `(Q,)`).
        learning_rates, weight_decays (sequences of `float`): the sweep (every pair is tried; AdamW).
        epochs (`int`, defaults to 100): passes over the train features (precomputed features make them cheap; MoCo v3
            and DINO train their linear heads for 90-100 epochs).
        validation_fraction (`float`, defaults to 0.1): part of the train set held out to choose the setting; 0 skips
            the sweep selection (the first setting is used) and needs a single setting.
        seed (`int`, defaults to 0): the split, the initialisation and the batch order.
    """
    if train_features.ndim != 2 or train_labels.shape != (train_features.shape[0],):
        raise ValueError(
            f"linear_probe expects train_features (N, D) and train_labels (N,); got {tuple(train_features.shape)} and "
            f"{tuple(train_labels.shape)}."
        )
    if (test_features is None) != (test_labels is None):
        raise ValueError("Pass both test_features and test_labels, or neither.")
    settings = list(itertools.product(learning_rates, weight_decays))
    if not settings:
        raise ValueError(f"The sweep is empty: learning_rates={learning_rates}, weight_decays={weight_decays}.")
    if not 0.0 <= validation_fraction < 1.0 or (validation_fraction == 0.0 and len(settings) > 1):
        raise ValueError(
            f"validation_fraction={validation_fraction} must lie in (0, 1) to choose among {len(settings)} settings "
            "(0 is allowed with a single learning rate and weight decay)."
        )
    features, labels = train_features.detach().float().cpu(), train_labels.detach().long().cpu()
    num_classes = int(labels.max()) + 1
    if test_labels is not None:
        num_classes = max(num_classes, int(test_labels.max()) + 1)
    validation_accuracy: dict[tuple[float, float], float] = {}
    best = settings[0]
    if len(settings) > 1:
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
        held_out = max(1, round(len(features) * validation_fraction))
        fit, check = order[held_out:], order[:held_out]
        standardize = Standardize(features[fit])
        heads = _train_heads(standardize(features[fit]), labels[fit], num_classes, settings, epochs, batch_size, seed)
        for setting, head in zip(settings, heads):
            validation_accuracy[setting] = _accuracy(head, standardize(features[check]), labels[check])
        best = max(settings, key=lambda setting: validation_accuracy[setting])  # ties: the first listed
    standardize = Standardize(features)
    (head,) = _train_heads(standardize(features), labels, num_classes, [best], epochs, batch_size, seed)
    classifier = nn.Sequential(standardize, head)
    if test_features is not None:
        accuracy = _accuracy(classifier, test_features.detach().float().cpu(), test_labels.detach().long().cpu())
    else:
        accuracy = validation_accuracy.get(best, _accuracy(classifier, features, labels))
    return LinearProbeResult(accuracy, best[0], best[1], validation_accuracy, classifier)

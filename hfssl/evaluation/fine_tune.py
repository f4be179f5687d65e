"""Semi-supervised evaluation: fine-tune the pretrained backbone with a linear classifier on a class-balanced fraction
of the labels (1% or 10%, as in SimCLR section 6 and SimCLR v2) through `transformers.Trainer`.

Legend: B batch, C channels, S image side, D feature dim, K classes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import EvalPrediction, Trainer, TrainingArguments
from transformers.modeling_outputs import ImageClassifierOutput

from hfssl.evaluation.features import feature_extractor, images_to_tensor, resolve_preprocessing
from hfssl.evaluation.metrics import TopKAccuracy


def label_fraction_subset(dataset: Any, fraction: float, seed: int = 0) -> Any:
    """A class-balanced subset holding `fraction` of the examples of each class (at least one), drawn with a seeded
    permutation, in the dataset's order (SimCLR's 1% and 10% ImageNet subsets are class-balanced too). `dataset` is a
    `datasets.Dataset` with a "label" column; `fraction` lies in (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must lie in (0, 1], e.g. 0.01 or 0.1 for 1% or 10% of the labels.")
    if "label" not in dataset.column_names:
        raise ValueError(f"label_fraction_subset needs a 'label' column; the dataset has {dataset.column_names}.")
    labels = np.asarray(dataset["label"])
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(len(members) * fraction))
        keep.extend(rng.permutation(members)[:count].tolist())
    return dataset.select(sorted(keep))


@dataclass
class DataCollatorForImageClassification:
    """Images and labels to `{"pixel_values": (B, C, S, S), "labels": (B,)}`: resized to `image_size` and normalised,
    without augmentation (the fraction-of-labels fine-tuning of SimCLR uses only crops and flips; none here, so
    runs are deterministic).

    Args:
        image_size (`int`): S.
        mean, std (sequences of `float`): the normalisation used in pretraining, one value per channel.
    """

    image_size: int
    mean: Sequence[float]
    std: Sequence[float]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = images_to_tensor([example["image"] for example in examples], self.image_size, len(self.mean))
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        labels = torch.tensor([example["label"] for example in examples], dtype=torch.long)
        return {"pixel_values": (pixels - mean) / std, "labels": labels}


class BackboneForImageClassification(nn.Module):
    """A backbone `(B, C, S, S) -> (B, D)` and a linear classifier `(B, D) -> (B, K)`, returning transformers'
    `ImageClassifierOutput` (cross-entropy loss when `labels` are given), so `Trainer` trains it as is.

    Args:
        backbone (`nn.Module`): e.g. an hfssl `Backbone` or a method model's `backbone` (copied, not shared).
        num_classes (`int`): K.
        feature_dim (`int`, *optional*): D; the backbone's `feature_dim` when omitted.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, feature_dim: int | None = None) -> None:
        super().__init__()
        feature_dim = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
        if feature_dim is None:
            raise ValueError(f"{type(backbone).__name__} has no `feature_dim`; pass feature_dim= its output size D.")
        self.backbone = copy.deepcopy(backbone)
        self.classifier = nn.Linear(feature_dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        logits = self.classifier(self.backbone(pixel_values))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def classification_accuracy(prediction: EvalPrediction) -> dict[str, float]:
    """A `compute_metrics` for `Trainer`: top-1 accuracy from logits (N, K) and labels (N,) through `evaluate`
    (`TopKAccuracy`, no Hub download)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return TopKAccuracy().compute(predictions=np.asarray(logits), references=np.asarray(prediction.label_ids))


def fine_tune(
    model: nn.Module, train_dataset: Any, eval_dataset: Any, args: TrainingArguments, label_fraction: float = 0.1,
    image_size: int | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
) -> tuple[dict[str, float], Trainer]:
    """Fine-tune the backbone of `model` with a new linear classifier on `label_fraction` of `train_dataset`'s labels
    (class-balanced, seeded by `args.seed`); return the metrics of `trainer.evaluate()` on `eval_dataset` (top-1 as
    `"eval_accuracy"`, in [0, 1]) and the trainer.

    Args:
        model (`nn.Module`): an hfssl method model (its `backbone` is used) or a backbone; left unchanged.
        train_dataset, eval_dataset (`datasets.Dataset`): "image" and "label" columns.
        args (`TrainingArguments`): needs `remove_unused_columns=False` (the collator reads the image column).
        label_fraction (`float`, defaults to 0.1): 0.01 and 0.1 are SimCLR's settings.
        image_size (`int`, *optional*), mean, std (sequences of `float`, *optional*): the preprocessing; the
            backbone's `data_config` by default.
    """
    if args.remove_unused_columns:
        raise ValueError("fine_tune needs TrainingArguments(remove_unused_columns=False): the collator reads 'image'.")
    backbone = feature_extractor(model)
    image_size, mean, std = resolve_preprocessing(backbone, image_size, mean, std)
    subset = label_fraction_subset(train_dataset, label_fraction, seed=args.seed)
    num_classes = int(max(max(train_dataset["label"]), max(eval_dataset["label"]))) + 1
    classifier = BackboneForImageClassification(backbone, num_classes)
    collator = DataCollatorForImageClassification(image_size, mean, std)
    trainer = Trainer(model=classifier, args=args, train_dataset=subset, eval_dataset=eval_dataset,
                      data_collator=collator, compute_metrics=classification_accuracy)  # fmt: skip
    trainer.train()
    return trainer.evaluate(), trainer

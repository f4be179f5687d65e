"""The image side an `SSLTrainer` without a `data_collator` builds the paper views at (`default_view_size`, from the
data), and the side training saw, recorded where evaluation and export read it (`record_training_image_size`)."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from hfssl.models.backbone import Backbone

logger = logging.getLogger(__name__)


def image_side(image: Any) -> int | None:
    """The shorter side in pixels of one image (PIL image, `datasets` Image dict, uint8 array (H, W[, C]) or tensor
    (C, H, W)), read from its header where it is a file; None when it is none of those."""
    if isinstance(image, dict):
        source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image.get("path")
        if source is None:
            return None
        with Image.open(source) as opened:  # reads the header only
            return min(opened.size)
    if isinstance(image, Image.Image):
        return min(image.size)
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return int(min(image.shape[:2]))
    if isinstance(image, torch.Tensor) and image.ndim in (2, 3):
        return int(min(image.shape[-2:]))
    return None


def first_image_side(dataset: Any, image_column: str = "image") -> tuple[int | None, str]:
    """`(side, "")`, the shorter side of the first example's image, or `(None, reason)` when it cannot be read.

    Args:
        dataset: a `datasets.Dataset` (decoded or not), or any indexable dataset of dicts; an `IterableDataset` is
            not read (peeking would consume it).
        image_column (`str`, defaults to `"image"`): the key holding the image.
    """
    if dataset is None:
        return None, "no train_dataset was given"
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        return None, f"the train_dataset ({type(dataset).__name__}) cannot be indexed"
    try:
        if len(dataset) == 0:
            return None, "the train_dataset is empty"
        example = dataset[0]
        side = image_side(example[image_column] if isinstance(example, dict) else None)
    except (KeyError, IndexError, TypeError, ValueError, OSError, NotImplementedError) as error:
        return None, f"its first example's {image_column!r} could not be read ({type(error).__name__}: {error})"
    if side is None:
        return None, f"its first example has no readable {image_column!r} image"
    return side, ""


def default_view_size(backbone_size: int, dataset: Any, trainer_name: str, example: str) -> int:
    """The side of the default collator's views: `min(first image's shorter side, backbone_size)` (so 32 px digits
    train at 32 px, not upsampled to a timm model's 224), or `backbone_size` when the data cannot be read; logged
    (INFO, or WARNING when the data could not be read) with how to change it.

    Args:
        backbone_size (`int`): the backbone's `data_config["input_size"][-1]`.
        dataset: the trainer's `train_dataset`.
        trainer_name (`str`): for the message, e.g. `"MoCoTrainer"`.
        example (`str`): the collator to pass instead, with `{size}` in it, e.g.
            `"DataCollatorForMultiView.moco_v2(image_size={size})"`.
    """
    side, reason = first_image_side(dataset)
    fix = f"pass a data_collator to train at another size, e.g. data_collator={example.format(size=side or 32)}"
    if side is None:
        logger.warning(
            "%s: no data_collator given; building the default views at %d px, the backbone's data_config input size, "
            "because %s. If the images are smaller, %s.",
            trainer_name, backbone_size, reason, fix,
        )  # fmt: skip
        return backbone_size
    size = min(side, backbone_size)
    logger.info(
        "%s: no data_collator given; building the default views at %d px (the first training image's shorter side is "
        "%d px, the backbone's data_config input size %d px: the smaller of the two); %s.",
        trainer_name, size, side, backbone_size, fix,
    )  # fmt: skip
    return size


def collator_image_size(collator: Any) -> int | None:
    """The largest view side a collator produces (`DataCollatorForMultiView`: its views' `size`; others: their
    `image_size`), None when it does not say."""
    views = getattr(collator, "views", None)
    if views and all(isinstance(getattr(view, "size", None), int) for view in views):
        return max(view.size for view in views)
    size = getattr(collator, "image_size", None)
    return int(size) if isinstance(size, int) else None


def batch_image_size(pixel_values: Any) -> int | None:
    """The largest side of the views in a batch: `pixel_values` a list of (B, C, S, S) tensors, one (B, C, S, S)
    tensor, or a (V, B, C, S, S) tensor; None for anything else."""
    if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim >= 4:
        return int(pixel_values.shape[-1])
    if isinstance(pixel_values, (list, tuple)) and pixel_values:
        sides = [int(view.shape[-1]) for view in pixel_values if isinstance(view, torch.Tensor) and view.ndim == 4]
        return max(sides) if sides else None
    return None


def record_training_image_size(model: nn.Module, size: int) -> None:
    """Record the side `size` the model trains at: `model.config.training_image_size` (saved by `save_pretrained` and
    the checkpoints; `backbone_from_config` reads it back) and the `input_size` of every `Backbone`'s `data_config`
    in the model (which feature extraction, the kNN callback and `save_backbone` default to)."""
    config = getattr(model, "config", None)
    if config is not None:
        config.training_image_size = int(size)
    for module in model.modules():
        if isinstance(module, Backbone):
            channels = module.data_config["input_size"][0]
            module.data_config = {**module.data_config, "input_size": (channels, int(size), int(size))}

"""Extract backbone features of an image dataset for kNN or linear-probe evaluation.

Legend: N images, C channels, S image side, D feature dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def images_to_tensor(images: Sequence, image_size: int, channels: int = 3) -> torch.Tensor:
    """PIL images or uint8 arrays -> float tensor (N, C, S, S) in [0, 1], bilinearly resized (no augmentation)."""
    arrays = []
    for image in images:
        array = np.asarray(image.convert("L" if channels == 1 else "RGB") if hasattr(image, "convert") else image)
        arrays.append(array if array.ndim == 3 else array[:, :, None])
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    if batch.shape[1] == 1 and channels == 3:
        batch = batch.expand(-1, 3, -1, -1)
    if batch.shape[-1] != image_size or batch.shape[-2] != image_size:
        batch = F.interpolate(batch, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return batch


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: Sequence,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int = 3,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Features of every image under the backbone in eval mode.

    Args:
        backbone (`nn.Module`): maps (B, C, S, S) to (B, D), e.g. `SimCLRModel.backbone`.
        images (sequence of PIL images or uint8 arrays): e.g. `dataset["image"]`.
        image_size (`int`): S, the side the images are resized to.
        mean, std (sequence of `float`): the normalisation used in training (one value per channel).
        channels (`int`, defaults to 3): C.
        batch_size (`int`, defaults to 512): images per forward pass.
        device (*optional*): where to run; the backbone's device by default.

    Returns:
        `torch.Tensor` of shape `(N, D)` on CPU.
    """
    device = device or next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    features = []
    for start in range(0, len(images), batch_size):
        batch = images_to_tensor(images[start : start + batch_size], image_size, channels)
        batch = (batch - mean_tensor) / std_tensor
        features.append(backbone(batch.to(device)).float().cpu())
    backbone.train(was_training)
    return torch.cat(features)


def knn_evaluate(
    backbone: nn.Module,
    memory_dataset,
    query_dataset,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int = 3,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Weighted-kNN top-1 (`hfssl.evaluation.knn`) of a backbone: `memory_dataset` (e.g. the train split) labels
    `query_dataset` (the test split). Both are `datasets.Dataset`s with "image" and "label" columns."""
    from hfssl.evaluation.knn import knn_accuracy

    memory = extract_features(backbone, memory_dataset["image"], image_size, mean, std, channels)
    queries = extract_features(backbone, query_dataset["image"], image_size, mean, std, channels)
    return knn_accuracy(
        memory, torch.tensor(memory_dataset["label"]), queries, torch.tensor(query_dataset["label"]), k, temperature
    )

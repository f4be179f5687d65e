"""Small heads that turn a backbone into a model `Trainer` can train on a pretext task.

Each wraps any backbone module (a timm model, a transformers vision model, or any module returning (B, D) or
(B, D, h, w)) and returns a transformers `ModelOutput` with `loss` (when `labels` are given) and `logits`.

Legend: B batch, D features, T tiles, N permutations, S image side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput


def pooled_features(backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Backbone output -> (B, D): a (B, D) tensor as is, a feature map (B, D, h, w) averaged, a transformers
    output's `pooler_output`, else its first token."""
    output = backbone(pixel_values)
    if isinstance(output, torch.Tensor):
        return output.mean(dim=(2, 3)) if output.ndim == 4 else output
    pooled = getattr(output, "pooler_output", None)
    if pooled is not None:
        return pooled.flatten(1)
    return output.last_hidden_state[:, 0]


def spatial_features(backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Backbone output -> feature map (B, D, h, w): timm's `forward_features`, or the patch tokens of a
    transformers ViT reshaped to their square grid (a leading CLS token is dropped)."""
    if hasattr(backbone, "forward_features"):
        output = backbone.forward_features(pixel_values)
    else:
        output = backbone(pixel_values)
        output = output if isinstance(output, torch.Tensor) else output.last_hidden_state
    if output.ndim == 4:
        return output
    tokens = output
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        tokens, side = tokens[:, 1:], math.isqrt(tokens.shape[1] - 1)
    if side * side != tokens.shape[1]:
        raise ValueError(
            f"cannot arrange {output.shape[1]} tokens on a square grid; pass a backbone returning (B, D, h, w)."
        )
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


class RotationPredictionHead(nn.Module):
    """Backbone + linear classifier over the 4 rotations (Gidaris et al., 2018); for `DataCollatorForRotation`.

    Args:
        backbone (`nn.Module`): feature extractor (see module docstring).
        num_features (`int`): D, the backbone's feature size.
        num_rotations (`int`): classes (4).
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_rotations: int = 4) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(num_features, num_rotations)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        """pixel_values (B, C, S, S), labels (B,) -> loss (cross-entropy), logits (B, num_rotations)."""
        logits = self.classifier(pooled_features(self.backbone, pixel_values))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


class JigsawHead(nn.Module):
    """Context-free network (Noroozi and Favaro, 2016): a shared backbone embeds each tile, the T embeddings are
    concatenated in order and an MLP classifies the permutation; for `DataCollatorForJigsaw`.

    Args:
        backbone (`nn.Module`): feature extractor applied to every tile.
        num_features (`int`): D. num_tiles (`int`): T (9). num_permutations (`int`): N.
        hidden_size (`int`): width of the MLP's hidden layer (the paper: 4096; small default here).
    """

    def __init__(
        self, backbone: nn.Module, num_features: int, num_tiles: int = 9, num_permutations: int = 100,
        hidden_size: int = 512,
    ) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Sequential(
            nn.Linear(num_tiles * num_features, hidden_size), nn.ReLU(inplace=True),
            nn.Linear(hidden_size, num_permutations),
        )  # fmt: skip

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        """pixel_values (B, T, C, t, t), labels (B,) -> loss (cross-entropy), logits (B, N)."""
        batch, tiles = pixel_values.shape[:2]
        features = pooled_features(self.backbone, pixel_values.flatten(0, 1)).view(batch, -1)
        logits = self.classifier(features)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


class ColorizationHead(nn.Module):
    """Dense colour regression: a 1x1 convolution on the backbone's feature map, upsampled bilinearly to the
    input size, trained with mean squared error against `DataCollatorForColorization`'s labels (a regression
    simplification of Zhang et al.'s classification over quantised ab bins).

    Args:
        backbone (`nn.Module`): gives a feature map (see `spatial_features`).
        num_features (`int`): D. out_channels (`int`): 2 for the "lab" target, 3 for "rgb".
    """

    def __init__(self, backbone: nn.Module, num_features: int, out_channels: int = 2) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Conv2d(num_features, out_channels, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        """pixel_values (B, C, S, S), labels (B, out_channels, S, S) -> loss (MSE), logits (B, out_channels, S, S)."""
        features = spatial_features(self.backbone, pixel_values)
        size = pixel_values.shape[-2:]
        logits = F.interpolate(self.projection(features), size=size, mode="bilinear", align_corners=False)
        loss = F.mse_loss(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

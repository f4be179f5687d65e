"""Projection and prediction MLPs as the SSL papers define them: `MLPHead`, with a class method per paper's head that
the method models build their heads with (DINO's head is `hfssl.models.dino.DINOHead`).

Legend: B batch, D input dim, H hidden dim, P output dim.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


class MLPHead(nn.Module):
    """A stack of linear layers with optional batch norm, ReLU between layers.

    Args:
        input_dim (`int`): D.
        hidden_dim (`int`): H, the width of the hidden layers.
        output_dim (`int`): P.
        num_layers (`int`, defaults to 2): number of linear layers (>= 1).
        batch_norm (`bool`, defaults to `True`): batch norm after each hidden linear layer.
        last_batch_norm (`bool`, defaults to `False`): a batch norm after the last layer (whose linear layer then has
            no bias): without affine parameters (MoCo v3 projector), or with them when `last_affine` (SimCLR).
        last_affine (`bool`, defaults to `False`): the last batch norm's affine parameters.
        bias (`bool`, defaults to `True`): biases in the linear layers (MoCo v3 uses none).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        bias: bool = True,
        last_affine: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLPHead needs num_layers >= 1, got {num_layers}.")
        layers: list[nn.Module] = []
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        for index, (in_features, out_features) in enumerate(itertools.pairwise(widths)):
            last = index == num_layers - 1
            followed_by_norm = last_batch_norm if last else batch_norm  # a linear layer before BN needs no bias
            layers.append(nn.Linear(in_features, out_features, bias=bias and not followed_by_norm))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(out_features))
                layers.append(nn.ReLU(inplace=True))
            elif last_batch_norm:
                layers.append(nn.BatchNorm1d(out_features, affine=last_affine))
        self.layers = nn.Sequential(*layers)
        self.input_dim, self.output_dim = input_dim, output_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (`torch.Tensor` of shape `(B, D)`). Returns: `torch.Tensor` of shape `(B, P)`."""
        return self.layers(features)

    @classmethod
    def simclr(
        cls,
        input_dim: int,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        last_batch_norm: bool = True,
    ) -> MLPHead:
        """SimCLR's projection head (Chen et al. 2020, appendix B.9; v2: `num_layers=3`), `Linear - BN - ReLU -
        Linear`, with the reference code's batch norm after the bias-free last layer (simclr/tf2/model.py, as
        lightly's); `last_batch_norm=False`: the paper's text, a biased last layer without it."""
        return cls(input_dim, hidden_dim, output_dim, num_layers, batch_norm=True, last_batch_norm=last_batch_norm,
                   last_affine=True)  # fmt: skip

    @classmethod
    def moco_v2(cls, input_dim: int, hidden_dim: int = 2048, output_dim: int = 128) -> MLPHead:
        """MoCo v2's projection head (Chen et al. 2020, "Improved Baselines"), without batch norm."""
        return cls(input_dim, hidden_dim, output_dim, num_layers=2, batch_norm=False)

    @classmethod
    def moco_v3_projector(
        cls, input_dim: int, hidden_dim: int = 4096, output_dim: int = 256, num_layers: int = 3
    ) -> MLPHead:
        """MoCo v3's projector (Chen et al. 2021, section 4; 3 layers for ResNet): bias-free, BN everywhere, the last
        one affine-free."""
        return cls(input_dim, hidden_dim, output_dim, num_layers, batch_norm=True, last_batch_norm=True, bias=False)

    @classmethod
    def moco_v3_predictor(cls, input_dim: int = 256, hidden_dim: int = 4096, output_dim: int = 256) -> MLPHead:
        """MoCo v3's predictor (2 layers, no last BN)."""
        return cls(input_dim, hidden_dim, output_dim, 2, batch_norm=True, last_batch_norm=False, bias=False)

    @classmethod
    def byol_projector(cls, input_dim: int, hidden_dim: int = 4096, output_dim: int = 256) -> MLPHead:
        """BYOL's projector (Grill et al. 2020, section 3.3): `Linear - BN - ReLU - Linear`, 4096 -> 256."""
        return cls(input_dim, hidden_dim, output_dim, num_layers=2, batch_norm=True)

    @classmethod
    def byol_predictor(cls, input_dim: int = 256, hidden_dim: int = 4096, output_dim: int = 256) -> MLPHead:
        """BYOL's predictor, the projector's shape on the projection (256 -> 4096 -> 256)."""
        return cls(input_dim, hidden_dim, output_dim, num_layers=2, batch_norm=True)

    @classmethod
    def simsiam_projector(
        cls, input_dim: int, hidden_dim: int = 2048, output_dim: int = 2048, num_layers: int = 3
    ) -> MLPHead:
        """SimSiam's projector (Chen & He 2021, section 3): BN after every layer (the last one affine-free), no biases
        (CIFAR: `num_layers=2`)."""
        return cls(input_dim, hidden_dim, output_dim, num_layers, batch_norm=True, last_batch_norm=True, bias=False)

    @classmethod
    def simsiam_predictor(cls, input_dim: int = 2048, hidden_dim: int = 512, output_dim: int = 2048) -> MLPHead:
        """SimSiam's bottleneck predictor (2048 -> 512 -> 2048)."""
        return cls(input_dim, hidden_dim, output_dim, num_layers=2, batch_norm=True)

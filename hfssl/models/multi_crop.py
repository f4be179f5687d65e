"""Multi-crop forward passes (Caron et al. 2020, SwAV; 2021, DINO `MultiCropWrapper`): one backbone pass per run
of consecutive crops of the same resolution, so batch statistics and kernels see whole groups.

Legend: V crops (views), B batch, C channels, S crop side, D feature dim.
"""

from __future__ import annotations

import inspect

import torch

from hfssl.models.backbone import Backbone
from hfssl.models.base import describe


def check_crops(pixel_values: list[torch.Tensor] | torch.Tensor, min_crops: int, method: str) -> list[torch.Tensor]:
    """Return the crops, the global ones first (a list of V >= `min_crops` tensors (B, C, S_v, S_v) sharing B and C,
    or a tensor (V, B, C, S, S)), as a list, or raise a ValueError naming `method`."""
    if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 5:
        pixel_values = list(pixel_values.unbind(0))
    if not isinstance(pixel_values, (list, tuple)) or len(pixel_values) < min_crops:
        raise ValueError(
            f"{method} expects pixel_values as a list of at least {min_crops} crops of shape (B, C, S, S), the global "
            f"crops first; received {describe(pixel_values)}. Use DataCollatorForMultiView.dino(...)."
        )
    if any(not isinstance(crop, torch.Tensor) or crop.ndim != 4 for crop in pixel_values):
        raise ValueError(f"{method} expects every crop of shape (B, C, S, S).")
    heads = {tuple(crop.shape[:2]) for crop in pixel_values}
    if len(heads) != 1:
        raise ValueError(
            f"{method} expects crops sharing batch size and channels; received (B, C) pairs {sorted(heads)}."
        )
    return list(pixel_values)


def interpolate_transformers_positions(backbone: Backbone) -> None:
    """Let a transformers ViT-style backbone take crops of any resolution (DINO's 96 px local crops next to its
    224 px global ones), by passing `interpolate_pos_encoding=True` to its forward through a forward pre-hook.

    A no-op for timm backbones (build a timm ViT with `backbone_kwargs={"dynamic_img_size": True}`) and for models
    whose forward has no `interpolate_pos_encoding` (convolutional networks take any size).
    """
    if backbone.library != "transformers":
        return
    if "interpolate_pos_encoding" not in inspect.signature(backbone.model.forward).parameters:
        return

    def add_flag(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "interpolate_pos_encoding": True}

    backbone.model.register_forward_pre_hook(add_flag, with_kwargs=True)


def multi_crop_features(backbone: Backbone, crops: list[torch.Tensor]) -> torch.Tensor:
    """Features `(V * B, D)` of every crop (crop 0's rows first, then crop 1's, ...), with one `backbone` pass per
    run of consecutive `crops` (`list` of V `torch.Tensor` of shape `(B, C, S_v, S_v)`) of one resolution."""
    groups: list[list[torch.Tensor]] = []
    for crop in crops:
        if groups and groups[-1][0].shape[-2:] == crop.shape[-2:]:
            groups[-1].append(crop)
        else:
            groups.append([crop])
    patch_embed = getattr(backbone.model, "patch_embed", None) if backbone.library == "timm" else None
    if getattr(patch_embed, "strict_img_size", False) and not getattr(backbone.model, "dynamic_img_size", False):
        expected = tuple(patch_embed.img_size)
        sides = [tuple(group[0].shape[-2:]) for group in groups]
        if any(side != expected for side in sides):
            raise ValueError(
                f"the timm backbone {backbone.name!r} takes {expected} px inputs only, but the crops come at {sides}. "
                "Build it with backbone_kwargs={'dynamic_img_size': True}."
            )
    return torch.cat([backbone(torch.cat(group)) for group in groups])

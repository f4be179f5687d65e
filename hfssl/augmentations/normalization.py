"""Read the per-channel normalisation (mean, std) a backbone was trained with."""

from __future__ import annotations

from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization_from(source: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return (mean, std), each a tuple of floats, one per channel.

    Args:
        source: an hfssl `Backbone` (or any object whose `data_config` dict has `mean`/`std`), an hfssl method model
            (`SimCLRModel`, ...: its `backbone`), a timm model (`timm.data.resolve_model_data_config` is used), a dict
            with `mean`/`std` (a timm data config), or an object with `image_mean`/`image_std` (an HF image processor).

    Raises:
        TypeError: when `source` carries no normalisation.
    """
    if isinstance(source, dict) and "mean" in source and "std" in source:
        return tuple(float(v) for v in source["mean"]), tuple(float(v) for v in source["std"])
    if getattr(source, "image_mean", None) is not None and getattr(source, "image_std", None) is not None:
        return normalization_from({"mean": source.image_mean, "std": source.image_std})
    data_config = getattr(source, "data_config", None)
    if isinstance(data_config, dict) and "mean" in data_config and "std" in data_config:  # an hfssl Backbone
        return normalization_from(data_config)
    if getattr(source, "pretrained_cfg", None) is not None:
        import timm.data

        return normalization_from(timm.data.resolve_model_data_config(source))
    backbone = getattr(source, "backbone", None)
    if backbone is not None and backbone is not source:  # an hfssl method model (SimCLRModel, ...)
        return normalization_from(backbone)
    raise TypeError(
        f"cannot read a normalisation from {type(source).__name__}; pass an hfssl Backbone or method model, a timm "
        "model, a timm data config dict with 'mean' and 'std', an image processor with image_mean/image_std, or give "
        "mean= and std= directly."
    )

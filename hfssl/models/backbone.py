"""A feature extractor from any timm or transformers vision model: images in, pooled features out.

Legend: B batch, C channels, H and W image size, D feature dim, L tokens.

`Backbone` follows timm's backbone contract: `forward(pixel_values) -> (B, D)`, `feature_dim` (timm's `num_features`)
and `data_config` (input size, mean, std) so the augmentations can normalise like the model was built for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from hfssl.models.base import transformers_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLINGS = ("auto", "cls", "mean", "pooler")
LIBRARIES = ("timm", "transformers")


def resolve_library(name: str) -> str:
    """Guess whether `name` is a timm model (`"timm"`) or a transformers model (`"transformers"`).

    timm wins for names in `timm.list_models()`, for `hf-hub:`/`timm/`/`local-dir:` ids and for folders in
    timm's layout (a `config.json` with `architecture` and `pretrained_cfg`, as `hfssl.export.save_backbone`
    writes); other local folders and Hub ids are transformers models.
    """
    import timm  # here, not at module level: `import hfssl` stays light
    if name.startswith(("hf-hub:", "timm/", "local-dir:")):
        return "timm"
    if os.path.isdir(name):
        if os.path.exists(os.path.join(name, "pretrained_cfg.json")):
            return "timm"
        config_path = os.path.join(name, "config.json")
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as file:
                config = json.load(file)
            if "architecture" in config and "pretrained_cfg" in config:
                return "timm"
        return "transformers"
    return "timm" if timm.is_model(name) or timm.list_models(name) else "transformers"


def apply_small_image_stem(model: nn.Module) -> None:
    """Replace a ResNet-style stem by a 3x3 stride-1 convolution without max-pool, in place.

    This is the CIFAR variant of ResNet the SSL literature uses on 28-64 px images (SimCLR appendix B.9, MoCo's CIFAR
    demo), which keeps the first stage at full resolution. A deep stem (timm's `*d` / `*t` ResNets: three 3x3
    convolutions, the first strided) becomes the same single convolution, so the stem's normalisation fits unchanged.
    """
    conv = getattr(model, "conv1", None)
    convs = [m for m in conv if isinstance(m, nn.Conv2d)] if isinstance(conv, nn.Sequential) else [conv]
    if not convs or not all(isinstance(c, nn.Conv2d) for c in convs) or not hasattr(model, "maxpool"):
        raise ValueError(
            f"small_image_stem=True needs a ResNet-style model with `conv1` (nn.Conv2d, or a deep stem of them) and "
            f"`maxpool`; {type(model).__name__} has neither. Use a ResNet-family timm model, or pass the model's own "
            "small-input options (e.g. img_size/patch_size for a ViT) through `backbone_kwargs`."
        )
    in_channels, out_channels = convs[0].in_channels, convs[-1].out_channels
    model.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


@contextmanager
def grouped_batch_norm(module: nn.Module, groups: int) -> Iterator[None]:
    """Inside the context, every BatchNorm layer of `module` normalises G = `groups` consecutive groups of its batch
    separately, each with its own statistics, as G devices each holding B / G of the batch would ("ghost" BN; MoCo's
    shuffle BN in one process). Only the normalisation is split: the other layers still see the whole batch. The
    layers' own forward runs on each group (so `BatchNormAct2d`'s activation and running statistics behave as usual:
    updated once per group). Backward passes need no context. `groups` = 1 changes nothing; a batch of B < G samples
    makes B groups of one.
    """
    patched = []
    if groups > 1:
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and "forward" not in vars(layer):
                def forward(inputs: torch.Tensor, _forward=layer.forward) -> torch.Tensor:
                    return torch.cat([_forward(group) for group in inputs.chunk(groups)])

                layer.forward = forward
                patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.forward


def processor_normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The `image_mean` / `image_std` of a transformers model's `preprocessor_config.json` (a local folder, or a Hub
    id already cached or reachable), e.g. 0.5 / 0.5 for google/vit-*; ImageNet's when there is none."""
    from transformers.utils import cached_file

    try:
        path = cached_file(name, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)  # fmt: skip
    except (OSError, ValueError):  # no such repository or an invalid id, or offline without a cached copy
        path = None
    if path is None:
        return IMAGENET_MEAN, IMAGENET_STD
    with open(path) as handle:
        processor = json.load(handle)
    mean, std = processor.get("image_mean"), processor.get("image_std")
    if mean is None or std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class Backbone(nn.Module):
    """Any timm or transformers vision model as a `(B, C, H, W) -> (B, D)` feature extractor.

    Args:
        name (`str`, *optional*): a timm model name (`"resnet18"`), a Hub id or a local folder. Required unless
            `config` is given.
        library (`str`, *optional*): `"timm"` or `"transformers"`; guessed from `name` when omitted.
        pretrained (`bool`, defaults to `False`): load pretrained weights (timm's `pretrained` flag; for
            transformers, `from_pretrained` instead of `from_config`).
        config (`PretrainedConfig` or `dict`, *optional*): a transformers config to build a model from scratch
            (a dict needs a `model_type` key). Takes precedence over `name`.
        pooling (`str`, defaults to `"auto"`): how transformers outputs become one vector. `"pooler"` uses
            `pooler_output`, `"cls"` the first token, `"mean"` the mean over tokens (or over H and W for convolutional
            models). `"auto"` picks `"cls"` for token models with a CLS token (ViT, as MoCo v3 and DINO do) and
            `"mean"` for the others (convolutional ones, configs with `hidden_sizes`, Swin). An unused pooler is
            frozen, so that every trainable parameter gets a gradient. timm models use their own global pool
            (`global_pool` in `model_kwargs`).
        small_image_stem (`bool`, defaults to `False`): 3x3 stride-1 stem without max-pool for 28-64 px images
            (ResNet-family timm models).
        in_chans (`int`, defaults to 3): input channels of a timm model.
        model_kwargs (`dict`, *optional*): extra keyword arguments to `timm.create_model` or `AutoModel`.
    """

    def __init__(
        self,
        name: str | None = None,
        library: str | None = None,
        pretrained: bool = False,
        config: PretrainedConfig | dict | None = None,
        pooling: str = "auto",
        small_image_stem: bool = False,
        in_chans: int = 3,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import timm  # here, not at module level: `import hfssl` stays light
        super().__init__()
        if name is None and config is None:
            raise ValueError("Backbone needs a model `name` (timm name, Hub id or folder) or a transformers `config`.")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not supported; choose one of {POOLINGS}.")
        library = "transformers" if config is not None else library or resolve_library(name)
        if library not in LIBRARIES:
            raise ValueError(f"library={library!r} is not supported; choose one of {LIBRARIES}.")
        self.name, self.library, self.pooling = name, library, pooling
        model_kwargs = dict(model_kwargs or {})
        if library == "timm":
            if os.path.isdir(name):  # a timm-layout folder (e.g. an hfssl export) loads through timm's local-dir:
                name, pretrained = f"local-dir:{name}", True
            self.model = timm.create_model(
                name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **model_kwargs
            )
            if small_image_stem:
                apply_small_image_stem(self.model)
            self.feature_dim = int(self.model.num_features)
            resolved = timm.data.resolve_data_config({}, model=self.model)
            self.data_config = {key: tuple(resolved[key]) for key in ("input_size", "mean", "std")}
        else:
            if small_image_stem:
                raise ValueError(
                    "small_image_stem=True is only available for timm ResNet-family models; for a transformers "
                    "model set the config's small-input options (e.g. image_size and patch_size) instead."
                )
            self.model = transformers_model(name, config, pretrained, **model_kwargs)
            model_config = self.model.config
            hidden_sizes = getattr(model_config, "hidden_sizes", None)
            self.feature_dim = int(hidden_sizes[-1] if hidden_sizes else model_config.hidden_size)
            image_size = getattr(model_config, "image_size", 224)
            image_size = image_size if isinstance(image_size, int) else image_size[0]
            if pooling == "auto":  # CLS only where there is one (ViT, DeiT, BEiT, DINOv2; not Swin's windows)
                has_cls = getattr(getattr(self.model, "embeddings", None), "cls_token", None) is not None
                self.pooling = "cls" if has_cls and not hidden_sizes else "mean"
            pooler = getattr(self.model, "pooler", None)
            if self.pooling != "pooler" and isinstance(pooler, nn.Module):
                pooler.requires_grad_(False)
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if config is not None else processor_normalisation(name)
            input_size = (getattr(model_config, "num_channels", 3), image_size, image_size)
            self.data_config = {"input_size": input_size, "mean": mean, "std": std}

    @property
    def transformers_config(self) -> PretrainedConfig | None:
        """The config of a transformers backbone (None for timm), to rebuild it without the Hub."""
        return self.model.config if self.library == "transformers" else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features `(B, D)` of normalised images `pixel_values` (`torch.Tensor` of shape `(B, C, H, W)`)."""
        if self.library == "timm":
            return self.model(pixel_values)
        outputs = self.model(pixel_values=pixel_values)
        name = type(self.model).__name__
        if self.pooling == "pooler":
            if getattr(outputs, "pooler_output", None) is None:
                raise ValueError(f"pooling='pooler' but {name} returns no pooler_output; use 'cls' or 'mean'.")
            return outputs.pooler_output.flatten(1)
        hidden = outputs.last_hidden_state
        if hidden.ndim == 4:  # (B, D, H, W) feature map
            if self.pooling == "cls":
                raise ValueError(f"pooling='cls' needs a token sequence; {name} gives a feature map.")
            return hidden.mean(dim=(2, 3))
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)


class SSLBackboneConfig(PretrainedConfig):
    """The backbone settings every hfssl method config shares (subclassed by `SimCLRConfig`, `MoCoConfig`, ...).

    Args:
        backbone_name (`str`, *optional*, defaults to `"resnet18"`): timm name, Hub id or local folder.
        backbone_library (`str`, *optional*): `"timm"` or `"transformers"`; guessed from the name when unset.
        backbone_pretrained (`bool`, defaults to `False`): start from pretrained weights. Reset to `False` once the
            model is built, since from then on the checkpoint carries the weights.
        backbone_model_config (`dict`, *optional*): a transformers config (`to_dict()` form) to build the backbone
            from scratch; filled in automatically for transformers backbones so `from_pretrained` needs no Hub.
        backbone_kwargs (`dict`, *optional*): extra arguments to `timm.create_model` / `AutoModel`.
        pooling (`str`, defaults to `"auto"`): see `Backbone`.
        small_image_stem (`bool`, defaults to `False`): 3x3 stride-1 stem, no max-pool (28-64 px images).
        num_channels (`int`, defaults to 3): input channels of a timm backbone.
        training_image_size (`int`, *optional*): not a constructor argument: the side the model trained at, written by
            `SSLTrainer`; a model built from a config that has it gets it in its backbone's `data_config`.
    """

    backbone_name: str | None = "resnet18"
    backbone_library: str | None = None
    backbone_pretrained: bool = False
    backbone_model_config: dict | None = None
    backbone_kwargs: dict | None = None
    pooling: str = "auto"
    small_image_stem: bool = False
    num_channels: int = 3


def backbone_from_config(config: SSLBackboneConfig) -> Backbone:
    """Build the `Backbone` a method config describes, then record what `from_pretrained` needs to rebuild it
    offline (the transformers config, `backbone_pretrained=False`)."""
    backbone = Backbone(
        name=config.backbone_name, library=config.backbone_library, pretrained=config.backbone_pretrained,
        config=config.backbone_model_config, pooling=config.pooling, small_image_stem=config.small_image_stem,
        in_chans=config.num_channels, model_kwargs=config.backbone_kwargs,
    )  # fmt: skip
    side = getattr(config, "training_image_size", None)  # hfssl.trainers.image_size.record_training_image_size
    if side:
        backbone.data_config["input_size"] = (backbone.data_config["input_size"][0], side, side)
    config.backbone_library = backbone.library
    config.backbone_pretrained = False
    if backbone.transformers_config is not None:
        config.backbone_model_config = backbone.transformers_config.to_dict()
    return backbone

"""`SSLPreTrainedModel`: what every hfssl method model (`SimCLRModel`, `MoCoModel`, ...) shares with transformers, and
the input and configuration checks and builders the methods share."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from hfssl.models.outputs import SSLModelOutput


def describe(pixel_values: Any) -> str:
    """What a model received instead of its views, for error messages."""
    if isinstance(pixel_values, torch.Tensor):
        return f"a tensor of shape {tuple(pixel_values.shape)}"
    if isinstance(pixel_values, (list, tuple)):
        return f"{type(pixel_values).__name__} of length {len(pixel_values)}"
    return type(pixel_values).__name__


def check_views(
    pixel_values: list[torch.Tensor] | torch.Tensor, count: int, method: str, preset: str | None = None
) -> list[torch.Tensor]:
    """Return the views as a list of `count` tensors of shape (B, C, H, W), or raise a ValueError saying why not and
    naming the collator preset to use (`DataCollatorForMultiView.<preset>()`, default `method.lower()`)."""
    if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 5:
        pixel_values = list(pixel_values.unbind(0))
    if not isinstance(pixel_values, (list, tuple)) or len(pixel_values) != count:
        raise ValueError(
            f"{method} expects pixel_values as a list of {count} views of shape (B, C, H, W); received "
            f"{describe(pixel_values)}. Use a multi-view collator such as "
            f"DataCollatorForMultiView.{preset or method.lower()}()."
        )
    shapes = {tuple(view.shape) for view in pixel_values}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(f"{method} expects views of one shape (B, C, H, W); received shapes {sorted(shapes)}.")
    return list(pixel_values)


def check_positive(method: str, config: PretrainedConfig, *names: str) -> None:
    """Raise a ValueError naming every head size among the `config` fields `names` that is not a positive integer."""
    sizes = {name: getattr(config, name) for name in names}
    wrong = {name: value for name, value in sizes.items() if not isinstance(value, int) or value < 1}
    if wrong:
        raise ValueError(
            f"{method} head sizes must be positive integers; got {wrong}. Use the paper's sizes (the defaults) or "
            "small positive values for tests."
        )


def check_config_dict(name: str, config: dict | None) -> None:
    """Raise a ValueError unless `config` is None or a transformers config in `to_dict()` form (with `model_type`)."""
    if config is not None and "model_type" not in config:
        raise ValueError(
            f"{name} must be a transformers config dict with a 'model_type' (config.to_dict()); got keys "
            f"{sorted(config)[:8]}."
        )


def transformers_model(
    name: str | None, config: PretrainedConfig | dict | None, pretrained: bool, **kwargs: Any
) -> PreTrainedModel:
    """A transformers `AutoModel` built from `config` (a config, or its `to_dict()` form) when given, else from `name`
    (a Hub id or folder): with its weights when `pretrained`, else freshly initialised."""
    if isinstance(config, dict):
        config = AutoConfig.for_model(**config)  # its "model_type" picks the config class
    if config is not None:
        return AutoModel.from_config(config, **kwargs)
    if pretrained:
        return AutoModel.from_pretrained(name, **kwargs)
    return AutoModel.from_config(AutoConfig.from_pretrained(name), **kwargs)


def negative_sampling_options(config: PretrainedConfig) -> dict[str, Any]:
    """A SimCLR or MoCo config's negative-sampling settings (`hfssl.losses.negative_sampling`) as keyword arguments."""
    names = ("negative_sampling", "hardness_beta", "tau_plus", "hardest_k", "num_random")
    return {name: getattr(config, name) for name in names}


class SSLPreTrainedModel(PreTrainedModel):
    """Base of the method models.

    - Submodules keep their own initialisation (timm, transformers and torch modules initialise themselves;
      transformers' generic re-initialisation would overwrite timm's and pretrained weights).
    - The loss is a per-batch mean (`accepts_loss_kwargs = False`), so Trainer scales it for gradient accumulation.
    - Checkpoints keep the in-memory parameter names (`save_original_format=False`): transformers would otherwise
      rename a nested transformers backbone's weights to its legacy Hub names, which Trainer's
      `resume_from_checkpoint` (a plain `load_state_dict`) cannot read back. `from_pretrained` reads both.
    """

    main_input_name = "pixel_values"
    accepts_loss_kwargs = False
    # What the method is trained with, for recipes and the trainers' defaults: its name in paper casing and its
    # paper's image views (a `DataCollatorForMultiView.paper_views` preset; None: no image views, e.g. text).
    method_name: str = "SSL"
    paper_views: str | None = None

    @classmethod
    def views_for(cls, config: Any) -> str | None:
        """The views preset a model of `config` trains with (`paper_views`; MoCo v3 takes BYOL's)."""
        return cls.paper_views

    @classmethod
    def method_title(cls, config: Any) -> str:
        """The method's name for messages and model cards, with its variant when the config has one ("MoCo v3")."""
        variant = getattr(config, "variant", None)
        return f"{cls.method_name} {variant}" if variant else cls.method_name

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Keep the initialisation each submodule gave itself."""

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args, save_original_format: bool = False, **kwargs
    ) -> None:
        """`PreTrainedModel.save_pretrained` with the in-memory weight names by default (see the class docstring)."""
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

    def forward(
        self, pixel_values: list[torch.Tensor], labels: torch.Tensor | None = None, **kwargs: Any
    ) -> SSLModelOutput:
        """The `SSLModelOutput` of `loss_from_embeddings(embed(pixel_values), embed_targets(pixel_values))`: the split
        that the cached-gradient step of `SSLTrainer` uses (`embed_targets` only where there is a teacher); models not
        split so override it.

        Args:
            pixel_values (`list` of 2 `torch.Tensor` of shape `(B, C, H, W)`): the two augmented views.
            labels (`torch.Tensor` of shape `(B,)`, *optional*): ignored (kept so collators may pass them through).
        """
        embeddings = self.embed(pixel_values)
        targets = self.embed_targets(pixel_values) if hasattr(self, "embed_targets") else None
        return self.loss_from_embeddings(embeddings, targets)

"""`SSLPreTrainedModel`: what every hfssl method model (`SimCLRModel`, `MoCoModel`, ...) shares with transformers, and
the input and configuration checks the methods share (`check_views`, `check_positive`)."""

from __future__ import annotations

import os

from typing import Any

import torch
from transformers import PreTrainedModel


def check_views(
    pixel_values: list[torch.Tensor] | torch.Tensor, count: int, method: str, preset: str | None = None
) -> list[torch.Tensor]:
    """Return the views as a list of `count` tensors of shape (B, C, H, W), or raise a ValueError saying why not and
    naming the collator preset to use (`DataCollatorForMultiView.<preset>()`, default `method.lower()`)."""
    if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 5:
        pixel_values = list(pixel_values.unbind(0))
    if not isinstance(pixel_values, (list, tuple)) or len(pixel_values) != count:
        received = f"a tensor of shape {tuple(pixel_values.shape)}" if isinstance(pixel_values, torch.Tensor) else (
            f"{type(pixel_values).__name__} of length {len(pixel_values)}"
            if isinstance(pixel_values, (list, tuple))
            else type(pixel_values).__name__
        )
        raise ValueError(
            f"{method} expects pixel_values as a list of {count} views of shape (B, C, H, W); received {received}. "
            f"Use a multi-view collator such as DataCollatorForMultiView.{preset or method.lower()}()."
        )
    shapes = {tuple(view.shape) for view in pixel_values}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(f"{method} expects views of one shape (B, C, H, W); received shapes {sorted(shapes)}.")
    return list(pixel_values)


def check_positive(method: str, **sizes: int) -> None:
    """Raise a ValueError naming every head size that is not a positive integer."""
    wrong = {name: value for name, value in sizes.items() if not isinstance(value, int) or value < 1}
    if wrong:
        raise ValueError(
            f"{method} head sizes must be positive integers; got {wrong}. Use the paper's sizes (the defaults) or "
            "small positive values for tests."
        )


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

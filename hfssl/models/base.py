"""`SSLPreTrainedModel`: what every hfssl method model (`SimCLRModel`, `MoCoModel`, ...) shares with transformers."""

from __future__ import annotations

import os

import torch
from transformers import PreTrainedModel


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

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Keep the initialisation each submodule gave itself."""

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args, save_original_format: bool = False, **kwargs
    ) -> None:
        """`PreTrainedModel.save_pretrained` with the in-memory weight names by default (see the class docstring)."""
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

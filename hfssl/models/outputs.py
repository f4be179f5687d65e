"""The output every hfssl method model returns to `SSLTrainer`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class SSLModelOutput(ModelOutput):
    """Output of an SSL method model.

    Args:
        loss (`torch.Tensor`, scalar): the training objective.
        embeddings (`torch.Tensor` of shape `(batch_size, dim)`, *optional*): the student projections of one view,
            from which the trainer logs the collapse signal (per-dimension std of the normalised embeddings).
        metrics (`dict[str, torch.Tensor]`, *optional*): detached scalars to log, named `"<objective>/<quantity>"`.
        state_update (`dict[str, torch.Tensor]`, *optional*): detached tensors the model needs after the optimizer step
            (e.g. MoCo's keys for its queue); the trainer passes them to `model.update_after_step`.
    """

    loss: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor] | None = None
    state_update: dict[str, torch.Tensor] | None = None

"""The output every hfssl method model returns to `SSLTrainer`, and the pair metrics the paired-input models share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


@torch.no_grad()
def pair_cosine_metrics(first: torch.Tensor, second: torch.Tensor) -> dict[str, torch.Tensor]:
    """`contrastive/positive_cosine`, the mean cosine of the pairs `(first[i], second[i])` of two `(B, P)` tensors,
    and `contrastive/negative_cosine`, of the pairs `(first[i], second[j])`, i != j (0 for a batch of one)."""
    cosine = F.normalize(first, dim=1) @ F.normalize(second, dim=1).T
    off_diagonal = ~torch.eye(cosine.shape[0], dtype=torch.bool, device=cosine.device)
    negative = cosine[off_diagonal].mean() if cosine.shape[0] > 1 else cosine.new_zeros(())
    return {"contrastive/positive_cosine": cosine.diagonal().mean(), "contrastive/negative_cosine": negative}

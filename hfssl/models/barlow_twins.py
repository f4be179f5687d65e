"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML).

Legend: B batch, C channels, H and W image size, D feature dim, P projection dim.

One backbone and projector embed both views; the loss (`hfssl.losses.barlow_twins`) drives the cross-correlation of
the batch-standardised projections towards the identity, over the global batch of all processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from hfssl.losses.barlow_twins import barlow_twins_loss
from hfssl.models.base import check_positive
from hfssl.models.backbone import SSLBackboneConfig
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.two_view import TwoViewProjectionModel


class BarlowTwinsConfig(SSLBackboneConfig):
    """Configuration of `BarlowTwinsModel`; the defaults are the paper's (Zbontar et al. 2021, section 4).

    Args:
        projection_hidden_dim (`int`, defaults to 8192): hidden width of the projector.
        projection_dim (`int`, defaults to 8192): the projection dimension P (the cross-correlation is P x P).
        projection_layers (`int`, defaults to 3): linear layers of the projector.
        lambda_offdiag (`float`, defaults to 5e-3): weight of the off-diagonal (redundancy) term.
        eps (`float`, defaults to 1e-5): the epsilon of the batch standardisation.
        gather_distributed (`bool`, defaults to `True`): statistics over the global batch of all processes.
    """

    model_type = "hfssl_barlow_twins"

    projection_hidden_dim: int = 8192
    projection_dim: int = 8192
    projection_layers: int = 3
    lambda_offdiag: float = 5e-3
    eps: float = 1e-5
    gather_distributed: bool = True

    def __post_init__(self, **kwargs) -> None:
        check_positive("Barlow Twins", self, "projection_hidden_dim", "projection_dim", "projection_layers")
        if self.lambda_offdiag < 0:
            raise ValueError(f"lambda_offdiag={self.lambda_offdiag} must be >= 0 (paper: 5e-3, code: 0.0051).")
        if self.eps <= 0:
            raise ValueError(f"eps={self.eps} must be > 0 (BatchNorm's 1e-5).")
        super().__post_init__(**kwargs)


class BarlowTwinsModel(TwoViewProjectionModel):
    """Barlow Twins: a backbone and a wide projector trained by redundancy reduction."""

    method_name = "Barlow Twins"
    paper_views = "byol"

    config_class = BarlowTwinsConfig
    base_model_prefix = "barlow_twins"

    def loss_from_embeddings(self, projections: torch.Tensor, targets: None = None) -> SSLModelOutput:
        """The Barlow Twins loss of `embed`'s `projections` (2, B, P), with the statistics of the global batch;
        `targets` is unused (no teacher).

        Returns:
            `SSLModelOutput` with `loss`, `embeddings` (B, P) (view 1) and metrics `barlow/on_diagonal`,
            `barlow/off_diagonal` (the unweighted terms) and `barlow/positive_cosine`.
        """
        z1, z2 = projections.unbind(0)
        config = self.config
        terms = barlow_twins_loss(z1, z2, config.lambda_offdiag, config.eps, config.gather_distributed)
        metrics = {f"barlow/{term}": getattr(terms, term).detach() for term in ("on_diagonal", "off_diagonal")}
        metrics["barlow/positive_cosine"] = F.cosine_similarity(z1, z2, dim=1).mean().detach()
        return SSLModelOutput(loss=terms.loss, embeddings=z1.detach(), metrics=metrics)


AutoConfig.register(BarlowTwinsConfig.model_type, BarlowTwinsConfig, exist_ok=True)
AutoModel.register(BarlowTwinsConfig, BarlowTwinsModel, exist_ok=True)

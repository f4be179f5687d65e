"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations", ICML).

Legend: B batch, V views (2), C channels, H and W image size, D feature dim, P projection dim.

Two augmented views of every image go through one backbone and projection head (in one pass of 2B images, so
batch norm sees both views, like SimCLR's global BN); NT-Xent pulls the two projections of an image together
against the 2B - 2 other projections, and against the other processes' projections when training distributed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from hfssl.distributed import gather_with_grad, is_distributed, other_processes
from hfssl.losses.negative_sampling import validate_negative_sampling
from hfssl.losses.nt_xent import nt_xent_loss
from hfssl.losses.temperature import LearnableTemperature
from hfssl.models.base import SSLPreTrainedModel, negative_sampling_options
from hfssl.models.backbone import SSLBackboneConfig, backbone_from_config
from hfssl.models.heads import MLPHead
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.two_view import TwoViewProjectionModel


class SimCLRConfig(SSLBackboneConfig):
    """Configuration of `SimCLRModel`: backbone, projection head and NT-Xent settings.

    Args:
        projection_hidden_dim (`int`, defaults to 2048): hidden width of the projection MLP (SimCLR: 2048).
        projection_dim (`int`, defaults to 128): output dimension (SimCLR: 128).
        projection_layers (`int`, defaults to 2): linear layers in the head (SimCLR v1: 2, SimCLR v2: 3).
        projection_last_batch_norm (`bool`, defaults to `True`): a batch norm after the head's last (bias-free) layer,
            as SimCLR's reference code and lightly's head; False: a biased last layer without it (the paper's text).
        temperature (`float`, defaults to 0.5): SimCLR's CIFAR-10 value at batch 256 (appendix B.9).
        learnable_temperature (`bool`, defaults to `False`): learn the temperature from `temperature` (CLIP-style).
        negative_sampling (`str`, defaults to `"uniform"`): see `hfssl.losses.negative_sampling`.
        hardness_beta, tau_plus, hardest_k, num_random: the options of that strategy.
        gather_distributed (`bool`, defaults to `True`): use the projections of all processes as negatives.
    """

    model_type = "hfssl_simclr"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    projection_layers: int = 2
    projection_last_batch_norm: bool = True
    temperature: float = 0.5
    learnable_temperature: bool = False
    negative_sampling: str = "uniform"
    hardness_beta: float = 1.0
    tau_plus: float = 0.1
    hardest_k: int | None = None
    num_random: int = 0
    gather_distributed: bool = True

    def __post_init__(self, **kwargs) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (SimCLR: 0.5 at batch 256, 0.1 with LARS).")
        validate_negative_sampling(*negative_sampling_options(self).values())
        super().__post_init__(**kwargs)


class SimCLRModel(SSLPreTrainedModel):
    """SimCLR: a backbone, a projection head and NT-Xent between two views. The backbone alone (`model.backbone`) is
    what downstream tasks use; `hfssl.export` exports it natively."""

    method_name = "SimCLR"
    paper_views = "simclr"

    config_class = SimCLRConfig
    base_model_prefix = "simclr"

    def __init__(self, config: SimCLRConfig) -> None:
        super().__init__(config)
        self.backbone = backbone_from_config(config)
        self.projector = MLPHead.simclr(
            self.backbone.feature_dim, config.projection_hidden_dim, config.projection_dim, config.projection_layers,
            last_batch_norm=config.projection_last_batch_norm,
        )
        self.temperature = LearnableTemperature(config.temperature) if config.learnable_temperature else None
        self.post_init()

    def current_temperature(self) -> torch.Tensor | float:
        """The learnt temperature (a tensor with gradient) or the fixed one."""
        return self.temperature() if self.temperature is not None else self.config.temperature

    embed = TwoViewProjectionModel.embed  # both views in one pass of 2B images: batch norm sees both

    def loss_from_embeddings(self, projections: torch.Tensor, targets: None = None) -> SSLModelOutput:
        """NT-Xent of `embed`'s `projections` (2, B, P), against the other processes' projections too when training
        distributed (gathered with gradient, so each process's gradient is its share of the global-batch gradient);
        `targets` is unused (no teacher).

        Returns:
            `SSLModelOutput` with `loss`, `embeddings` (B, P) of the first view and metrics
            `contrastive/temperature`, `contrastive/positive_cosine`.
        """
        z1, z2 = projections.unbind(0)
        temperature = self.current_temperature()
        negatives = None
        if self.config.gather_distributed and is_distributed():
            negatives = other_processes(gather_with_grad(projections.flatten(0, 1)), 2 * z1.shape[0])
        loss = nt_xent_loss(z1, z2, temperature, negatives=negatives, **negative_sampling_options(self.config))
        metrics = {
            "contrastive/temperature": torch.as_tensor(temperature, dtype=torch.float32).detach(),
            "contrastive/positive_cosine": F.cosine_similarity(z1, z2, dim=1).mean().detach(),
        }
        return SSLModelOutput(loss=loss, embeddings=z1.detach(), metrics=metrics)


AutoConfig.register(SimCLRConfig.model_type, SimCLRConfig, exist_ok=True)
AutoModel.register(SimCLRConfig, SimCLRModel, exist_ok=True)

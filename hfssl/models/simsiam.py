"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning", CVPR).

Legend: B batch, C channels, H and W image size, D feature dim, P projection dim.

One network (backbone and projector) embeds both views; a predictor maps the projection of one view to that of the
other, whose gradient is stopped: `L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2`, D the negative cosine
(eq. 1-2). No negatives, no momentum encoder: the stop-gradient alone prevents collapse (section 4.1). The loss is
per sample, so gradient accumulation is exact and this model has no cached-gradient path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from hfssl.losses.byol import simsiam_loss
from hfssl.models.backbone import SSLBackboneConfig, backbone_from_config
from hfssl.models.base import SSLPreTrainedModel, check_positive, check_views
from hfssl.models.heads import MLPHead
from hfssl.models.outputs import SSLModelOutput


class SimSiamConfig(SSLBackboneConfig):
    """Configuration of `SimSiamModel`; the defaults are the paper's ImageNet ones (Chen & He 2021, section 3).

    Args:
        projection_hidden_dim (`int`, defaults to 2048): hidden width of the projector.
        projection_dim (`int`, defaults to 2048): the projection (and prediction) dimension P.
        projection_layers (`int`, defaults to 3): linear layers of the projector (CIFAR variant: 2).
        predictor_hidden_dim (`int`, defaults to 512): the predictor's bottleneck width.
    """

    model_type = "hfssl_simsiam"

    projection_hidden_dim: int = 2048
    projection_dim: int = 2048
    projection_layers: int = 3
    predictor_hidden_dim: int = 512

    def __post_init__(self, **kwargs) -> None:
        check_positive(
            "SimSiam", self, "projection_hidden_dim", "projection_dim", "projection_layers", "predictor_hidden_dim"
        )
        super().__post_init__(**kwargs)


class SimSiamModel(SSLPreTrainedModel):
    """SimSiam: a backbone, a projector ending in an affine-free batch norm, and a bottleneck predictor."""

    method_name = "SimSiam"
    paper_views = "moco_v2"

    config_class = SimSiamConfig
    base_model_prefix = "simsiam"

    def __init__(self, config: SimSiamConfig) -> None:
        super().__init__(config)
        self.backbone = backbone_from_config(config)
        dim = config.projection_dim
        self.projector = MLPHead.simsiam_projector(
            self.backbone.feature_dim, config.projection_hidden_dim, dim, config.projection_layers
        )
        self.predictor = MLPHead.simsiam_predictor(dim, config.predictor_hidden_dim, dim)
        self.post_init()

    def forward(
        self, pixel_values: list[torch.Tensor], labels: torch.Tensor | None = None, **kwargs
    ) -> SSLModelOutput:
        """SimSiam's symmetric loss `(simsiam_loss(p1, z2) + simsiam_loss(p2, z1)) / 2`, both views in one pass.

        Args:
            pixel_values (`list` of 2 `torch.Tensor` of shape `(B, C, H, W)`): the two augmented views.
            labels (`torch.Tensor` of shape `(B,)`, *optional*): ignored.

        Returns:
            `SSLModelOutput` with `loss` (in [-1, 1]), `embeddings` (B, P) (projections of view 1, whose normalised
            std is the paper's collapse signal) and metric `simsiam/projection_cosine` (mean cosine between the two
            views' projections).
        """
        view1, view2 = check_views(pixel_values, 2, "SimSiam", preset="moco_v2")
        projections = self.projector(self.backbone(torch.cat([view1, view2])))
        predictions = self.predictor(projections).unflatten(0, (2, -1))
        z1, z2 = projections.unflatten(0, (2, -1)).unbind(0)
        loss = (simsiam_loss(predictions[0], z2) + simsiam_loss(predictions[1], z1)) / 2
        metrics = {"simsiam/projection_cosine": F.cosine_similarity(z1, z2, dim=1).mean().detach()}
        return SSLModelOutput(loss=loss, embeddings=z1.detach(), metrics=metrics)


AutoConfig.register(SimSiamConfig.model_type, SimSiamConfig, exist_ok=True)
AutoModel.register(SimSiamConfig, SimSiamModel, exist_ok=True)

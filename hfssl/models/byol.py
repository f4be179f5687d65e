"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS).

Legend: B batch, C channels, H and W image size, D feature dim, P projection dim.

An online network (backbone, projector, predictor) predicts the projection that a target network, an exponential moving
average of the online backbone and projector updated after every optimizer step, gives to the other view; there are no
negatives. The loss is the normalised MSE `2 - 2 cos(q(z1), z'2)`, symmetrised over the two views (eq. 2-3).

Both views go through each network in one pass of 2B images (the batch norms see both views; the paper's code
normalises each view separately). The loss is per sample, so gradient accumulation is exact and this model has no
cached-gradient (`embed` / `loss_from_embeddings`) path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from hfssl.losses.byol import byol_loss
from hfssl.models.backbone import SSLBackboneConfig, backbone_from_config
from hfssl.models.base import SSLPreTrainedModel, check_positive, check_views
from hfssl.models.heads import MLPHead
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.teacher import MomentumTeacher


class BYOLConfig(SSLBackboneConfig):
    """Configuration of `BYOLModel`; the defaults are the paper's (Grill et al. 2020, section 3.3, appendix A).

    Args:
        projection_hidden_dim (`int`, defaults to 4096): hidden width of the projector.
        projection_dim (`int`, defaults to 256): the projection (and prediction) dimension P.
        predictor_hidden_dim (`int`, defaults to 4096): hidden width of the predictor.
        momentum (`float`, defaults to 0.996): the target EMA momentum at the first step (tau_base).
        momentum_final (`float`, defaults to 1.0): the momentum at the last step, reached on a cosine schedule.
            `SSLTrainingArguments.teacher_momentum(_final)` override both.
    """

    model_type = "hfssl_byol"

    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    predictor_hidden_dim: int = 4096
    momentum: float = 0.996
    momentum_final: float = 1.0

    def __post_init__(self, **kwargs) -> None:
        check_positive("BYOL", self, "projection_hidden_dim", "projection_dim", "predictor_hidden_dim")
        if not 0.0 <= self.momentum <= 1.0 or not 0.0 <= self.momentum_final <= 1.0:
            raise ValueError(
                f"momentum={self.momentum} and momentum_final={self.momentum_final} must lie in [0, 1] "
                "(BYOL: 0.996 -> 1.0)."
            )
        super().__post_init__(**kwargs)


class BYOLModel(MomentumTeacher, SSLPreTrainedModel):
    """BYOL: an online backbone, projector and predictor, and a momentum target backbone and projector
    (`MomentumTeacher`: `teacher_backbone`, `teacher_projector`, updated by `update_after_step`)."""

    method_name = "BYOL"
    paper_views = "byol"

    config_class = BYOLConfig
    base_model_prefix = "byol"

    def __init__(self, config: BYOLConfig) -> None:
        super().__init__(config)
        self.backbone = backbone_from_config(config)
        dim = config.projection_dim
        self.projector = MLPHead.byol_projector(self.backbone.feature_dim, config.projection_hidden_dim, dim)
        self.predictor = MLPHead.byol_predictor(dim, config.predictor_hidden_dim, dim)
        self.add_teacher("backbone")
        self.add_teacher("projector")
        self.post_init()

    def online(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The online projections and predictions of the two views (B, C, H, W), in one pass: `(projections,
        predictions)`, each a `torch.Tensor` of shape `(2, B, P)` (views 1, 2)."""
        projections = self.projector(self.backbone(torch.cat([view1, view2])))
        predictions = self.predictor(projections)
        return projections.unflatten(0, (2, -1)), predictions.unflatten(0, (2, -1))

    @torch.no_grad()
    def targets(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The target network's projections of the two views (B, C, H, W), without gradient, in the order the
        predictions pair with them: `torch.Tensor` of shape `(2, B, P)`, the targets of views 2, 1."""
        return self.teacher_projector(self.teacher_backbone(torch.cat([view2, view1]))).unflatten(0, (2, -1))

    def forward(
        self, pixel_values: list[torch.Tensor], labels: torch.Tensor | None = None, **kwargs
    ) -> SSLModelOutput:
        """BYOL's symmetric loss `byol_loss(q1, z'2) + byol_loss(q2, z'1)`.

        Args:
            pixel_values (`list` of 2 `torch.Tensor` of shape `(B, C, H, W)`): the two augmented views.
            labels (`torch.Tensor` of shape `(B,)`, *optional*): ignored.

        Returns:
            `SSLModelOutput` with `loss` (in [0, 8]), `embeddings` (B, P) (online projections of view 1) and metric
            `byol/positive_cosine` (mean cosine between predictions and their targets).
        """
        view1, view2 = check_views(pixel_values, 2, "BYOL", preset="byol")
        projections, predictions = self.online(view1, view2)
        targets = self.targets(view1, view2)
        loss = byol_loss(predictions[0], targets[0]) + byol_loss(predictions[1], targets[1])
        cosine = F.cosine_similarity(predictions.flatten(0, 1), targets.flatten(0, 1), dim=1).mean()
        metrics = {"byol/positive_cosine": cosine.detach()}
        return SSLModelOutput(loss=loss, embeddings=projections[0].detach(), metrics=metrics)


AutoConfig.register(BYOLConfig.model_type, BYOLConfig, exist_ok=True)
AutoModel.register(BYOLConfig, BYOLModel, exist_ok=True)

"""`TwoViewProjectionModel`: a backbone and a projector embedding two views in one pass, the shape Barlow Twins and
VICReg share.

Legend: B batch, C channels, H and W image size, P projection dim.
"""

from __future__ import annotations

import torch

from hfssl.models.backbone import SSLBackboneConfig, backbone_from_config
from hfssl.models.base import SSLPreTrainedModel, check_views
from hfssl.models.heads import MLPHead


class TwoViewProjectionModel(SSLPreTrainedModel):
    """Backbone + projector (`MLPHead`, batch norm, no biases: Barlow Twins' and VICReg's) over two views; subclasses
    set `method_name`, `paper_views` and `loss_from_embeddings` (with `SSLTrainingArguments.gradient_cache_chunk_size`
    the projector's batch norms see a chunk, the loss the whole batch)."""

    def __init__(self, config: SSLBackboneConfig) -> None:
        super().__init__(config)
        self.backbone = backbone_from_config(config)
        self.projector = MLPHead(
            self.backbone.feature_dim, config.projection_hidden_dim, config.projection_dim, config.projection_layers,
            batch_norm=True, bias=False,
        )  # fmt: skip
        self.post_init()

    def embed(self, pixel_values: list[torch.Tensor]) -> torch.Tensor:
        """The projections `(2, B, P)` of the two views (`list` of 2 `torch.Tensor` of shape `(B, C, H, W)`), view 1
        then view 2, in one pass of 2B images."""
        view1, view2 = check_views(pixel_values, 2, self.method_name, preset=self.paper_views)
        return self.projector(self.backbone(torch.cat([view1, view2]))).unflatten(0, (2, view1.shape[0]))

"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS;
reference code main_swav.py and src/resnet50.py).

Legend: G global crops (2), V crops (G global then the local ones), B batch, D feature dim, P projection dim,
K prototypes, Q queue length.

Online clustering with swapped prediction: every crop is embedded (backbone, projection MLP `Linear - BN - ReLU -
Linear`, L2 normalisation) and scored against K learnt, unit-norm prototypes. The codes of each global crop are an
equipartitioned assignment of the batch to the prototypes (Sinkhorn-Knopp, no gradient, all-reduced across
processes, `hfssl.losses.swav`); every other crop predicts them (`swav_loss`).

The state lives in parameters and persistent buffers (so Trainer checkpoints resume exactly) and changes in
`update_after_step`, never in `forward`: the prototypes are renormalised to unit norm (the reference does it before
each forward: the same sequence), `step` counts the optimizer steps, and the optional `queue` (G, Q, P) holds the
projections of the last global crops, newest first; once full, its scores join the batch's in Sinkhorn. Like the
reference's, the queue is per process: under DDP, `SwAVTrainer` sets `ddp_broadcast_buffers=False`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel

from hfssl.losses.swav import sinkhorn_knopp, swav_loss
from hfssl.models.backbone import SSLBackboneConfig, backbone_from_config
from hfssl.models.base import SSLPreTrainedModel
from hfssl.models.heads import MLPHead
from hfssl.models.multi_crop import check_crops, interpolate_transformers_positions, multi_crop_features
from hfssl.models.outputs import SSLModelOutput

NUM_GLOBAL_CROPS = 2  # the crops whose codes are computed (main_swav.py's crops_for_assign = [0, 1])


class SwAVConfig(SSLBackboneConfig):
    """Configuration of `SwAVModel`; defaults are main_swav.py's (ResNet-50, 800 epochs, batch 4096).

    Args:
        projection_hidden_dim (`int`, defaults to 2048): hidden width of the projection MLP (`hidden_mlp`).
        projection_dim (`int`, defaults to 128): P (`feat_dim`).
        num_prototypes (`int`, defaults to 3000): K (`nmb_prototypes`).
        temperature (`float`, defaults to 0.1): of the predicted assignments.
        sinkhorn_epsilon (`float`, defaults to 0.05): entropic regularisation of the codes.
        sinkhorn_iterations (`int`, defaults to 3).
        freeze_prototypes_steps (`int`, defaults to 313): optimizer steps without prototype updates
            (`freeze_prototypes_niters`, one epoch at batch 4096).
        queue_length (`int`, defaults to 0): Q, rows of the feature queue per process (the reference's
            `queue_length / world_size`; paper, batch 256: 3840); 0 disables the queue.
        queue_start_step (`int`, defaults to 0): the optimizer step from which projections enter the queue (paper:
            epoch 15).
    """

    model_type = "hfssl_swav"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    num_prototypes: int = 3000
    temperature: float = 0.1
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_steps: int = 313
    queue_length: int = 0
    queue_start_step: int = 0

    def __post_init__(self, **kwargs) -> None:
        if self.temperature <= 0 or self.sinkhorn_epsilon <= 0:
            raise ValueError(
                f"temperature={self.temperature} and sinkhorn_epsilon={self.sinkhorn_epsilon} must be > 0 (SwAV: 0.1 "
                "and 0.05)."
            )
        for name in ("projection_hidden_dim", "projection_dim", "num_prototypes", "sinkhorn_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        for name in ("freeze_prototypes_steps", "queue_length", "queue_start_step"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 disables it).")
        super().__post_init__(**kwargs)


class SwAVModel(SSLPreTrainedModel):
    """SwAV: backbone, projection MLP, prototypes, and the optional feature queue."""

    method_name = "SwAV"
    paper_views = "swav"

    config_class = SwAVConfig
    base_model_prefix = "swav"

    def __init__(self, config: SwAVConfig) -> None:
        super().__init__(config)
        self.backbone = backbone_from_config(config)
        interpolate_transformers_positions(self.backbone)
        self.projector = MLPHead(self.backbone.feature_dim, config.projection_hidden_dim, config.projection_dim, 2)
        self.prototypes = nn.Linear(config.projection_dim, config.num_prototypes, bias=False)
        self.normalize_prototypes()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        if config.queue_length:
            self.register_buffer("queue", torch.zeros(NUM_GLOBAL_CROPS, config.queue_length, config.projection_dim))
        else:
            self.queue = None
        self.post_init()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Scale every prototype to unit norm, in place."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def queue_in_use(self) -> bool:
        """Whether the queue is full (its oldest row written), so its scores join Sinkhorn's."""
        return self.queue is not None and bool(self.queue[:, -1].any())

    @torch.no_grad()
    def enqueue(self, projections: torch.Tensor) -> None:
        """Push the global crops' normalised `projections` (G, B, P) at the front of the queue, dropping the oldest
        rows."""
        rows = min(projections.shape[1], self.queue.shape[1])
        self.queue.copy_(
            torch.cat([projections[:, :rows].to(self.queue), self.queue[:, : self.queue.shape[1] - rows]], 1)
        )

    @torch.no_grad()
    def update_after_step(self, momentum: float | None, state_updates: list[dict[str, torch.Tensor]]) -> None:
        """Called by `SSLTrainer` after each optimizer step: prototypes back to unit norm, each micro-batch's
        `state_update["projections"]` (G, B, P) into the queue (from `queue_start_step` on), `step += 1`; `momentum`
        is unused (no teacher)."""
        self.normalize_prototypes()
        if self.queue is not None and int(self.step) >= self.config.queue_start_step:
            for update in state_updates:
                self.enqueue(update["projections"])
        self.step += 1

    def forward(
        self, pixel_values: list[torch.Tensor], labels: torch.Tensor | None = None, **kwargs
    ) -> SSLModelOutput:
        """The swapped-prediction loss of every crop against the Sinkhorn codes of the global crops.

        Args:
            pixel_values (`list` of V `torch.Tensor` of shape `(B, C, S_v, S_v)`): 2 global crops, then the local
                crops; one backbone pass per resolution.
            labels (`torch.Tensor` of shape `(B,)`, *optional*): ignored.

        Returns:
            `SSLModelOutput` with `loss`, `embeddings` (B, P) (normalised projections of the first global crop),
            metrics `swav/code_entropy`, `swav/prototype_usage` (fraction of prototypes that are the top code of
            some sample), `swav/queue_in_use`, `collapse/uniform_loss_gap` ((ln K - loss) / ln K), and
            `state_update["projections"]` (G, B, P) for the queue.
        """
        config = self.config
        crops = check_crops(pixel_values, NUM_GLOBAL_CROPS, "SwAV")
        batch_size = crops[0].shape[0]
        projections = F.normalize(self.projector(multi_crop_features(self.backbone, crops)), dim=1)  # (V * B, P)
        scores = self.prototypes(projections).unflatten(0, (len(crops), batch_size))  # (V, B, K)
        use_queue = self.queue_in_use()
        codes = []
        with torch.no_grad():
            for index in range(NUM_GLOBAL_CROPS):
                crop_scores = scores[index].detach()
                if use_queue:
                    crop_scores = torch.cat([self.queue[index] @ self.prototypes.weight.t(), crop_scores])
                codes.append(
                    sinkhorn_knopp(crop_scores, config.sinkhorn_epsilon, config.sinkhorn_iterations)[-batch_size:]
                )
            codes = torch.stack(codes)  # (G, B, K)
        loss = swav_loss(scores, codes, config.temperature)
        with torch.no_grad():
            uniform_loss = math.log(config.num_prototypes)
            metrics = {
                "swav/code_entropy": torch.special.entr(codes).sum(dim=-1).mean(),
                "swav/prototype_usage": torch.tensor(codes.argmax(dim=-1).unique().numel() / config.num_prototypes),
                "swav/queue_in_use": torch.tensor(float(use_queue)),
                "collapse/uniform_loss_gap": (uniform_loss - loss.detach()) / max(uniform_loss, 1e-12),
            }
            global_projections = projections[: NUM_GLOBAL_CROPS * batch_size].detach()
        state_update = {"projections": global_projections.unflatten(0, (NUM_GLOBAL_CROPS, batch_size))}
        return SSLModelOutput(
            loss=loss, embeddings=global_projections[:batch_size], metrics=metrics, state_update=state_update
        )


AutoConfig.register(SwAVConfig.model_type, SwAVConfig, exist_ok=True)
AutoModel.register(SwAVConfig, SwAVModel, exist_ok=True)

"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning", building on He et al. 2020)
and MoCo v3 (Chen et al. 2021, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV).

Legend: B batch, C channels, H and W image size, D feature dim, P projection dim, Q queue size.

A student (backbone + projector, + predictor in v3) embeds the queries; a momentum teacher, an exponential moving
average of the student updated after every optimizer step (`update_after_step`), embeds the keys without gradient.
v2 is an asymmetric InfoNCE of view-1 queries against view-2 keys, the negatives a FIFO queue of past keys; v3 is
symmetric, with no queue: the negatives are the other keys of the (global) batch, the loss scaled by 2 * temperature.
The teacher weights and the queue are parameters and persistent buffers, so checkpoints carry them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from hfssl.distributed import gather_no_grad, is_distributed, other_processes
from hfssl.losses.info_nce import info_nce_loss
from hfssl.losses.negative_sampling import validate_negative_sampling
from hfssl.models.base import SSLPreTrainedModel, check_views, negative_sampling_options
from hfssl.models.backbone import SSLBackboneConfig, backbone_from_config, grouped_batch_norm
from hfssl.models.heads import MLPHead
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.teacher import MomentumTeacher

VARIANT_DEFAULTS = {
    "v2": {"projection_hidden_dim": 2048, "projection_dim": 128, "projection_layers": 2, "predictor_hidden_dim": 0,
           "queue_size": 65536, "temperature": 0.2, "momentum": 0.999, "momentum_final": 0.999, "symmetric": False},
    "v3": {"projection_hidden_dim": 4096, "projection_dim": 256, "projection_layers": 3, "predictor_hidden_dim": 4096,
           "queue_size": 0, "temperature": 1.0, "momentum": 0.99, "momentum_final": 1.0, "symmetric": True},
}  # fmt: skip


class MoCoConfig(SSLBackboneConfig):
    """Configuration of `MoCoModel`. Fields left at `None` take the paper default of `variant` (`VARIANT_DEFAULTS`).

    Args:
        variant (`str`, defaults to `"v2"`): `"v2"` (queue, MLP head without BN) or `"v3"` (predictor, no queue).
        projection_hidden_dim, projection_dim, projection_layers (`int`, *optional*): the projector
            (v2: 2048 / 128 / 2 layers; v3: 4096 / 256 / 3 layers).
        predictor_hidden_dim (`int`, *optional*): v3's predictor width (4096); 0 for none.
        queue_size (`int`, *optional*): v2's queue of negatives (65536); 0 for none.
        temperature (`float`, *optional*): v2: 0.2, v3: 1.0 (ResNet; 0.2 for ViT).
        momentum, momentum_final (`float`, *optional*): the teacher EMA at the first and last step, on a cosine
            schedule (v2: 0.999 constant; v3: 0.99 -> 1.0). `SSLTrainingArguments.teacher_momentum` overrides them.
        symmetric (`bool`, *optional*): the loss of both (query, key) view orders (v3) or one (v2).
        negative_sampling, hardness_beta, tau_plus, hardest_k, num_random: see `hfssl.losses.negative_sampling`.
        gather_distributed (`bool`, defaults to `True`): gather keys across processes (v3 negatives, v2 queue).
        batch_norm_splits (`int`, defaults to 1): shuffle BN (He et al. 2020, Sec. 3.3) inside each process: with
            G > 1, while training, both backbones compute their BatchNorm statistics over G groups of each batch, the
            teacher's in a random order, so a query and its key are not normalised together (the reference CIFAR
            demo's `SplitBatchNorm` plus shuffling). 1: off.
    """

    model_type = "hfssl_moco"

    variant: str = "v2"
    projection_hidden_dim: int | None = None
    projection_dim: int | None = None
    projection_layers: int | None = None
    predictor_hidden_dim: int | None = None
    queue_size: int | None = None
    temperature: float | None = None
    momentum: float | None = None
    momentum_final: float | None = None
    symmetric: bool | None = None
    negative_sampling: str = "uniform"
    hardness_beta: float = 1.0
    tau_plus: float = 0.1
    hardest_k: int | None = None
    num_random: int = 0
    gather_distributed: bool = True
    batch_norm_splits: int = 1

    def __post_init__(self, **kwargs) -> None:
        if self.variant not in VARIANT_DEFAULTS:
            raise ValueError(f"variant={self.variant!r} is not supported; choose one of {tuple(VARIANT_DEFAULTS)}.")
        for name, value in VARIANT_DEFAULTS[self.variant].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (MoCo v2 uses 0.2, v3 1.0).")
        if not 0.0 <= self.momentum <= 1.0 or not 0.0 <= self.momentum_final <= 1.0:
            raise ValueError(
                f"momentum={self.momentum} and momentum_final={self.momentum_final} must lie in [0, 1] "
                "(MoCo v2: 0.999, v3: 0.99 -> 1.0)."
            )
        if self.batch_norm_splits < 1:
            raise ValueError(f"batch_norm_splits={self.batch_norm_splits} must be >= 1 (1: shuffle BN off; e.g. 8).")
        if self.queue_size < 0:
            raise ValueError(f"queue_size={self.queue_size} must be >= 0 (0 disables the queue).")
        if self.queue_size == 0 and self.variant == "v2":
            raise ValueError("MoCo v2 takes its negatives from the queue: set queue_size > 0 (paper: 65536).")
        validate_negative_sampling(*negative_sampling_options(self).values())
        super().__post_init__(**kwargs)


class MoCoModel(MomentumTeacher, SSLPreTrainedModel):
    """MoCo v2 / v3: a student, its momentum teacher (`teacher_backbone`, `teacher_projector`) and (v2) a queue of
    negative keys."""

    method_name = "MoCo"
    paper_views = "moco_v2"

    @classmethod
    def views_for(cls, config: MoCoConfig) -> str:
        """MoCo v2's views, or for v3 BYOL's asymmetric ones (MoCo v3's main_moco.py follows BYOL's)."""
        return "byol" if config.variant == "v3" else "moco_v2"

    config_class = MoCoConfig
    base_model_prefix = "moco"

    def __init__(self, config: MoCoConfig) -> None:
        super().__init__(config)
        self.backbone = backbone_from_config(config)
        dim = config.projection_dim
        sizes = (self.backbone.feature_dim, config.projection_hidden_dim, dim, config.projection_layers)
        if config.variant == "v3":
            self.projector = MLPHead.moco_v3_projector(*sizes)
        else:
            self.projector = MLPHead(*sizes, batch_norm=False)
        self.predictor = None
        if config.predictor_hidden_dim:
            self.predictor = MLPHead.moco_v3_predictor(dim, config.predictor_hidden_dim, dim)
        self.add_teacher("backbone")
        self.add_teacher("projector")
        if config.queue_size:
            self.register_buffer("queue", F.normalize(torch.randn(config.queue_size, config.projection_dim), dim=1))
            self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        else:
            self.queue = self.queue_pointer = None
        self.post_init()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write normalised `keys` (n, P) into the queue in FIFO order (oldest entries overwritten first), wrapping
        around; only the last Q are kept if n > Q."""
        size = self.queue.shape[0]
        keys = keys[-size:]
        positions = (self.queue_pointer + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[positions] = keys.to(self.queue.dtype)
        self.queue_pointer.copy_((self.queue_pointer + keys.shape[0]) % size)

    @torch.no_grad()
    def update_after_step(self, momentum: float | None, state_updates: list[dict[str, torch.Tensor]]) -> None:
        """`MomentumTeacher.update_after_step` (the teacher EMA), then each micro-batch's `state_update["keys"]` into
        the queue."""
        super().update_after_step(momentum, state_updates)
        if self.queue is not None:
            for update in state_updates:
                self.enqueue(update["keys"])

    def _split_forward(self, backbone: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`backbone(images)`; while training with `batch_norm_splits` = G > 1, each of G consecutive groups of the
        batch has its own BatchNorm statistics (`grouped_batch_norm`)."""
        with grouped_batch_norm(backbone, self.config.batch_norm_splits if backbone.training else 1):
            return backbone(images)

    def embed(self, pixel_values: list[torch.Tensor]) -> torch.Tensor:
        """The student's queries `(V, B, P)` of the two views (`list` of 2 `torch.Tensor` of shape `(B, C, H, W)`), in
        one pass: V = 2 when symmetric (views 1, 2), else 1 (view 1)."""
        view1, view2 = check_views(pixel_values, 2, "MoCo", preset="moco_v2")
        images = torch.cat([view1, view2]) if self.config.symmetric else view1
        queries = self.projector(self._split_forward(self.backbone, images))
        if self.predictor is not None:
            queries = self.predictor(queries)
        return queries.unflatten(0, (-1, view1.shape[0]))

    @torch.no_grad()
    def embed_targets(self, pixel_values: list[torch.Tensor]) -> torch.Tensor:
        """The teacher's normalised keys `(V, B, P)` of the two views, without gradient, the positive of each query of
        `embed`: the keys of views 2, 1 (symmetric) or of view 2."""
        view1, view2 = check_views(pixel_values, 2, "MoCo", preset="moco_v2")
        teacher_views = torch.cat([view2, view1]) if self.config.symmetric else view2
        if self.config.batch_norm_splits > 1 and self.teacher_backbone.training:  # shuffle BN: groups of random images
            order = torch.randperm(teacher_views.shape[0], device=teacher_views.device)
            features = self._split_forward(self.teacher_backbone, teacher_views[order])[order.argsort()]
        else:
            features = self.teacher_backbone(teacher_views)
        keys = F.normalize(self.teacher_projector(features), dim=1)
        return keys.unflatten(0, (-1, view1.shape[0]))

    def loss_from_embeddings(self, queries: torch.Tensor, keys: torch.Tensor) -> SSLModelOutput:
        """InfoNCE of the queries against their keys, the queue (v2) and the other keys of the global batch (v3).

        The `keys` (V, B, P) of `embed_targets` of every process are gathered (they carry no gradient), so each of the
        `queries` (V, B, P) of `embed` meets the same negatives as in one process holding the global batch; the
        gathered keys, view by view in rank order, go to the queue.

        Returns:
            `SSLModelOutput` with `loss`, `embeddings` (B, P) (student, first view), metrics
            `contrastive/temperature`, `contrastive/positive_cosine`, and `state_update["keys"]` for the queue.
        """
        config = self.config
        gather = config.gather_distributed and is_distributed()
        v3 = config.variant == "v3"
        options = dict(negative_sampling_options(config), in_batch_negatives=v3, scale_by_temperature=v3)
        losses = []
        for query, key in zip(queries, keys):
            negatives = self.queue
            if v3 and gather:
                others = other_processes(gather_no_grad(key), key.shape[0])
                negatives = others if negatives is None else torch.cat([others, negatives])
            losses.append(info_nce_loss(query, key, config.temperature, negatives=negatives, **options))
        # v3 sums the two directions (reference code); v2 averages them when symmetric.
        loss = sum(losses) if v3 else sum(losses) / len(losses)
        metrics = {
            "contrastive/temperature": torch.tensor(float(config.temperature)),
            "contrastive/positive_cosine": F.cosine_similarity(queries[0], keys[0], dim=1).mean().detach(),
        }
        # View by view, so the queue receives the keys in the order one process with the global batch would write.
        keys_for_queue = torch.cat([gather_no_grad(key) if gather else key for key in keys])
        return SSLModelOutput(
            loss=loss, embeddings=queries[0].detach(), metrics=metrics, state_update={"keys": keys_for_queue}
        )


AutoConfig.register(MoCoConfig.model_type, MoCoConfig, exist_ok=True)
AutoModel.register(MoCoConfig, MoCoModel, exist_ok=True)

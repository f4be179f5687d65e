"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", ICCV; reference code
main_dino.py and vision_transformer.py `DINOHead`).

Legend: G global crops (2), V crops (G global then the local ones), B batch, D feature dim, H head hidden dim,
N bottleneck dim, K output dim.

Self-distillation without labels: a student (backbone + `DINOHead`) sees every crop, a teacher (an EMA of the
student) sees the two global crops, and the student's softmax on each crop is pulled towards the teacher's centred,
sharpened softmax on the other global crop(s) (`hfssl.losses.dino`).

The state (the teacher's weights, the centre `center` (1, K) and the optimizer step count `step`, from which the
teacher temperature's warm-up is computed) lives in parameters and persistent buffers, so checkpoints resume exactly,
and advances in `update_after_step`, never in `forward`. The centre moves towards the mean of the step's
micro-batch centres, i.e. the centre of the optimizer step's global batch, so gradient accumulation matches one large
batch and evaluation leaves it alone. The reference updates the centre right after the loss, before the optimizer
step: the next forward sees the same centre either way.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel

from hfssl.losses.dino import dino_loss, teacher_batch_center, teacher_probabilities, teacher_temperature_schedule
from hfssl.models.backbone import SSLBackboneConfig, backbone_from_config
from hfssl.models.base import SSLPreTrainedModel
from hfssl.models.multi_crop import check_crops, interpolate_transformers_positions, multi_crop_features
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.teacher import MomentumTeacher

NUM_GLOBAL_CROPS = 2


class WeightNormalizedLinear(nn.Module):
    """A bias-free linear layer with weight normalisation over the output rows (Salimans & Kingma 2016; what
    `nn.utils.weight_norm(nn.Linear(N, K, bias=False))` computes): `W = g * V / ||V||_row`.

    Written out rather than through `torch.nn.utils.parametrizations` so the state dict holds plain tensors
    (`weight` is V; `magnitude` is g, absent when fixed to 1), which checkpoints read back as they are.

    Args:
        input_dim (`int`): N.
        output_dim (`int`): K.
        learn_magnitude (`bool`, defaults to `False`): learn g (initialised to 1); `False` is DINO's
            `norm_last_layer=True`, g fixed to 1.
    """

    def __init__(self, input_dim: int, output_dim: int, learn_magnitude: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(input_dim, output_dim, bias=False).weight.detach().clone())
        self.magnitude = nn.Parameter(torch.ones(output_dim, 1)) if learn_magnitude else None

    def normalized_weight(self) -> torch.Tensor:
        """`torch.Tensor` of shape `(K, N)`: g * V / ||V|| row-wise."""
        weight = F.normalize(self.weight, dim=1)
        return weight if self.magnitude is None else weight * self.magnitude

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Args: inputs (`torch.Tensor` of shape `(B, N)`). Returns: `torch.Tensor` of shape `(B, K)`."""
        return F.linear(inputs, self.normalized_weight())


class DINOHead(nn.Module):
    """DINO's projection head: an MLP (GELU, optional batch norm) to a bottleneck, L2 normalisation, then a
    weight-normalised linear layer to K outputs.

    Args:
        input_dim (`int`): D.
        output_dim (`int`, defaults to 65536): K (DINO's ViT default).
        hidden_dim (`int`, defaults to 2048): H.
        bottleneck_dim (`int`, defaults to 256): N.
        num_layers (`int`, defaults to 3): linear layers of the MLP (1 is a single `Linear(D, N)`).
        batch_norm (`bool`, defaults to `False`): batch norm after the hidden layers (DINO's `use_bn_in_head`).
        norm_last_layer (`bool`, defaults to `True`): fix the last layer's weight-norm magnitude to 1 (DINO's
            default for ViT-S; `False` learns it, which the paper finds less stable).
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DINOHead needs num_layers >= 1, got {num_layers}.")
        layers: list[nn.Module] = []
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        for index, (in_features, out_features) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(in_features, out_features))
            if index < num_layers - 1:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(out_features))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():  # DINO's init: truncated normal (std 0.02), zero biases
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormalizedLinear(bottleneck_dim, output_dim, learn_magnitude=not norm_last_layer)

    def bottleneck(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (`torch.Tensor` of shape `(B, D)`). Returns: the L2-normalised bottleneck `(B, N)`."""
        return F.normalize(self.mlp(features), dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (`torch.Tensor` of shape `(B, D)`). Returns: logits `(B, K)`."""
        return self.last_layer(self.bottleneck(features))


class DINOConfig(SSLBackboneConfig):
    """Configuration of `DINOModel`; defaults are main_dino.py's (ViT-S/16 recipe).

    Args:
        out_dim (`int`, defaults to 65536): K, the head's output dimension.
        head_hidden_dim (`int`, defaults to 2048), head_bottleneck_dim (`int`, defaults to 256),
        head_layers (`int`, defaults to 3), head_batch_norm (`bool`, defaults to `False`),
        norm_last_layer (`bool`, defaults to `True`): see `DINOHead`.
        student_temperature (`float`, defaults to 0.1): tau_s.
        teacher_temperature (`float`, defaults to 0.04): tau_t after the warm-up (paper: 0.04 -> 0.07 for long runs).
        warmup_teacher_temperature (`float`, defaults to 0.04): tau_t at step 0.
        warmup_teacher_temperature_steps (`int`, defaults to 0): linear warm-up length in optimizer steps (paper: 30
            epochs).
        center_momentum (`float`, defaults to 0.9): the centre's EMA momentum.
        momentum, momentum_final (`float`, defaults to 0.996 and 1.0): the teacher EMA momentum at the first and the
            last step, cosine schedule (`SSLTrainingArguments.teacher_momentum(_final)` override them).
        freeze_last_layer_steps (`int`, *optional*): optimizer steps during which `DINOTrainer` applies no update
            to the head's last layer; `None` (default) is the first epoch of the run, as the paper's
            `--freeze_last_layer 1` (1250 steps on ImageNet at batch 1024); 0 disables it.
    """

    model_type = "hfssl_dino"

    out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    head_batch_norm: bool = False
    norm_last_layer: bool = True
    student_temperature: float = 0.1
    teacher_temperature: float = 0.04
    warmup_teacher_temperature: float = 0.04
    warmup_teacher_temperature_steps: int = 0
    center_momentum: float = 0.9
    momentum: float = 0.996
    momentum_final: float = 1.0
    freeze_last_layer_steps: int | None = None

    def __post_init__(self, **kwargs) -> None:
        for name in ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0 (DINO: tau_s 0.1, tau_t 0.04 -> 0.07).")
        for name in ("center_momentum", "momentum", "momentum_final"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1] (DINO: 0.9, 0.996, 1.0).")
        for name in ("out_dim", "head_hidden_dim", "head_bottleneck_dim", "head_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        for name in ("warmup_teacher_temperature_steps", "freeze_last_layer_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 optimizer steps (0 disables it).")
        super().__post_init__(**kwargs)


class DINOModel(MomentumTeacher, SSLPreTrainedModel):
    """DINO: a student backbone + `DINOHead`, its EMA teacher (`teacher_backbone`, `teacher_head`), the centre and
    the step counter."""

    method_name = "DINO"
    paper_views = "dino"

    config_class = DINOConfig
    base_model_prefix = "dino"

    def __init__(self, config: DINOConfig) -> None:
        super().__init__(config)
        self.backbone = backbone_from_config(config)
        interpolate_transformers_positions(self.backbone)
        self.head = DINOHead(
            self.backbone.feature_dim, config.out_dim, config.head_hidden_dim, config.head_bottleneck_dim,
            config.head_layers, config.head_batch_norm, config.norm_last_layer,
        )  # fmt: skip
        self.add_teacher("backbone")
        self.add_teacher("head")
        self.register_buffer("center", torch.zeros(1, config.out_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.post_init()

    def current_teacher_temperature(self) -> float:
        """tau_t at the current `step` (`teacher_temperature_schedule`)."""
        config = self.config
        return teacher_temperature_schedule(
            int(self.step), config.warmup_teacher_temperature_steps, config.warmup_teacher_temperature,
            config.teacher_temperature,
        )  # fmt: skip

    @torch.no_grad()
    def update_after_step(self, momentum: float | None, state_updates: list[dict[str, torch.Tensor]]) -> None:
        """`MomentumTeacher.update_after_step` (the teacher EMA), then the centre EMA towards the mean of the step's
        `state_update["center"]` (K,) (each the all-reduced teacher mean of a micro-batch), then `step += 1`."""
        super().update_after_step(momentum, state_updates)
        if state_updates:
            batch_center = torch.stack([update["center"] for update in state_updates]).mean(dim=0)
            self.center.lerp_(batch_center.to(self.center).view_as(self.center), 1.0 - self.config.center_momentum)
        self.step += 1

    def forward(
        self, pixel_values: list[torch.Tensor], labels: torch.Tensor | None = None, **kwargs
    ) -> SSLModelOutput:
        """The DINO loss of the student on every crop against the teacher on the global crops.

        Args:
            pixel_values (`list` of V `torch.Tensor` of shape `(B, C, S_v, S_v)`): the 2 global crops, then the
                local crops (`DataCollatorForMultiView.dino`); one backbone pass per resolution.
            labels (`torch.Tensor` of shape `(B,)`, *optional*): ignored.

        Returns:
            `SSLModelOutput` with `loss`, `embeddings` (B, N) (the student's normalised bottleneck of the first
            global crop), metrics `dino/teacher_entropy`, `dino/kl` (teacher-student KL, mean over pairs),
            `dino/teacher_temperature`, `collapse/uniform_loss_gap` ((ln K - loss) / ln K, 0 when the loss sits at
            the uniform-output value) and `state_update["center"]` (K,).
        """
        crops = check_crops(pixel_values, NUM_GLOBAL_CROPS, "DINO")
        batch_size = crops[0].shape[0]
        bottleneck = self.head.bottleneck(multi_crop_features(self.backbone, crops))  # (V * B, N)
        student_logits = self.head.last_layer(bottleneck).unflatten(0, (len(crops), batch_size))
        with torch.no_grad():
            teacher_features = multi_crop_features(self.teacher_backbone, crops[:NUM_GLOBAL_CROPS])
            teacher_logits = self.teacher_head(teacher_features).unflatten(0, (NUM_GLOBAL_CROPS, batch_size))
        temperature = self.current_teacher_temperature()
        loss = dino_loss(student_logits, teacher_logits, self.center, self.config.student_temperature, temperature)
        with torch.no_grad():
            targets = teacher_probabilities(teacher_logits, self.center, temperature)
            entropy = torch.special.entr(targets).sum(dim=-1).mean()
            uniform_loss = math.log(self.config.out_dim)
            metrics = {
                "dino/teacher_entropy": entropy,
                "dino/kl": loss.detach() - entropy,
                "dino/teacher_temperature": torch.tensor(temperature),
                "collapse/uniform_loss_gap": (uniform_loss - loss.detach()) / max(uniform_loss, 1e-12),
            }
            state_update = {"center": teacher_batch_center(teacher_logits)}
        return SSLModelOutput(
            loss=loss, embeddings=bottleneck[:batch_size].detach(), metrics=metrics, state_update=state_update
        )


AutoConfig.register(DINOConfig.model_type, DINOConfig, exist_ok=True)
AutoModel.register(DINOConfig, DINOModel, exist_ok=True)

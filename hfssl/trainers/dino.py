"""`DINOTrainer`: `SSLTrainer` for `DINOModel`, with DINO's optimisation schedules (Caron et al. 2021, main_dino.py).

What it adds to `SSLTrainer`, each a function of the optimizer step so `resume_from_checkpoint` is exact: the cosine
weight-decay schedule (`WeightDecayScheduleCallback`), the head's last layer frozen for its first steps
(`CancelGradientsCallback`) and per-parameter gradient clipping (`DINOTrainer._clip_grad_norm`). The teacher EMA
(0.996 -> 1), the centre and the teacher-temperature step come from `SSLTrainer`'s `SSLStateUpdateCallback`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hfssl.models.dino import DINOModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.callbacks import CancelGradientsCallback, WeightDecayScheduleCallback
from hfssl.trainers.ssl_trainer import SSLTrainer


@dataclass
class DINOTrainingArguments(SSLTrainingArguments):
    """`SSLTrainingArguments` with main_dino.py's optimisation defaults (ViT-S/16, batch 1024).

    Changed defaults:
        learning_rate (`float`, defaults to 5e-4): DINO's base rate for batch 256 (scale linearly with the batch).
        weight_decay (`float`, defaults to 0.04): at the first step.
        max_grad_norm (`float`, defaults to 3.0): gradient clipping, per parameter as DINO's `clip_gradients`.
        lr_scheduler_type (`str`, defaults to `"cosine"`): cosine decay after the linear warm-up.
        warmup_steps (`float`, defaults to 0.1): linear warm-up over the first 10% of the steps (DINO: 10 of 100
            epochs); an integer >= 1 is a step count, as in `TrainingArguments`.

    DINO arguments:
        weight_decay_final (`float`, *optional*, defaults to 0.4): the weight decay at the last step, reached on a
            cosine schedule; `None` keeps `weight_decay` constant.
    """

    learning_rate: float = field(default=5e-4, metadata={"help": "DINO: 5e-4 x batch / 256."})
    weight_decay: float = field(default=0.04, metadata={"help": "Weight decay at the first step (DINO: 0.04)."})
    max_grad_norm: float = field(default=3.0, metadata={"help": "Gradient clipping (DINO: 3.0)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "DINO: cosine."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps, or a fraction of them if < 1 (DINO: 0.1)."})
    weight_decay_final: float | None = field(
        default=0.4, metadata={"help": "Weight decay at the last step, cosine schedule (DINO: 0.4; None: constant)."}
    )

    def __post_init__(self) -> None:
        if self.weight_decay_final is not None and self.weight_decay_final < 0:
            raise ValueError(f"weight_decay_final={self.weight_decay_final} must be >= 0 (DINO: 0.4), or None.")
        super().__post_init__()


class DINOTrainer(SSLTrainer):
    """Train DINO (Caron et al., 2021). `model` may be a `DINOModel` or a backbone name; `args` default to
    `DINOTrainingArguments("outputs/dino")` (plain `SSLTrainingArguments` train with a constant weight decay);
    `data_collator` defaults to `DataCollatorForMultiView.dino` at the backbone's input size (2 global crops, 8 local
    crops at 96/224 of it). The head's last layer is frozen for `config.freeze_last_layer_steps` (default: the first
    epoch, as the paper's `--freeze_last_layer 1`): its gradients are dropped after clipping, just before the optimizer
    step, as the reference's `cancel_gradients_last_layer`. Otherwise as `SSLTrainer`.
    """

    model_class = DINOModel
    arguments_class = DINOTrainingArguments
    default_arguments = {"output_dir": "outputs/dino"}

    def __init__(self, model: DINOModel | str, args: SSLTrainingArguments | None = None, **kwargs: Any) -> None:
        super().__init__(model=model, args=args, **kwargs)
        self.add_callback(WeightDecayScheduleCallback(self))
        self.add_callback(CancelGradientsCallback(
            self, lambda model: list(model.head.last_layer.parameters()),
            lambda model: model.config.freeze_last_layer_steps,
        ))  # fmt: skip

    def _clip_grad_norm(self, model: nn.Module) -> torch.Tensor | None:
        """DINO's `utils.clip_gradients`: every parameter's gradient scaled to norm <= `max_grad_norm` on its own
        (`coef = max_grad_norm / (norm + 1e-6)` when below 1), so one large gradient does not shrink the others (nor
        does the frozen last layer's, dropped only after clipping). Returns the global pre-clip norm, for the logs.
        DeepSpeed, FSDP and mixed device meshes keep Trainer's global-norm clipping (their gradients are sharded)."""
        from accelerate.utils import DistributedType

        sharded = self.accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
        if sharded or getattr(self, "_has_mixed_mesh_grads", lambda model: False)(model):
            return super()._clip_grad_norm(model)
        self.accelerator.unscale_gradients()  # fp16: clip the true gradients, as accelerate's clip_grad_norm_
        grads = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        if not grads:
            return torch.tensor(0.0)
        norms = torch.stack(torch._foreach_norm(grads)).float()
        coefficients = (self.args.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [c.to(g.dtype) for c, g in zip(coefficients.unbind(), grads)])
        return torch.linalg.vector_norm(norms)

"""The momentum teacher: an exponential moving average (EMA) of the student, shared by every method that has one
(BYOL, MoCo v2 / v3, DINO), its `cosine_schedule` and `check_teacher_sharding`.

Legend: m the momentum, s a student parameter, t its teacher copy.

The teacher modules live on the model itself (`teacher_backbone`, ...), so `state_dict`, `save_pretrained` and Trainer
checkpoints carry them under those names, and without gradient, so the optimiser never sees them. Only parameters
are averaged: buffers (BatchNorm running statistics) are the teacher's own, computed on the batches it sees, as in
the MoCo and DINO reference code (`zip(student.parameters(), teacher.parameters())`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine interpolation from `start` at step 0 to `end` at `total_steps` (BYOL's and MoCo v3's momentum schedule:
    `end - (end - start) * (cos(pi * step / total_steps) + 1) / 2`); constant `end` after `total_steps`."""
    if total_steps <= 0:
        return end
    progress = min(max(step / total_steps, 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1.0) / 2.0


class MomentumTeacher:
    """Mixin giving a method model an EMA teacher of some of its modules.

    Use it as `class BYOLModel(MomentumTeacher, SSLPreTrainedModel)`, call `add_teacher(name)` in `__init__` once the
    student module `name` exists (before `post_init`), and give the config a `momentum` (the default of
    `momentum_update`) and `momentum_final` (read by `SSLStateUpdateCallback` for the cosine schedule). A model with
    more state (MoCo's queue, DINO's centre) extends `update_after_step`, calling `super().update_after_step` first.

    Attributes:
        teacher_module_names (`tuple` of `(str, str)`): the (student, teacher) module names, in the order added.
    """

    teacher_module_names: tuple[tuple[str, str], ...] = ()

    def add_teacher(self, student_name: str) -> nn.Module:
        """Register and return `teacher_<student_name>`, a copy without gradient of the student module
        `student_name` (`"backbone"`, `"projector"`, `"head"`), and pair the two."""
        teacher_name = f"teacher_{student_name}"
        teacher = copy.deepcopy(getattr(self, student_name)).requires_grad_(False)
        setattr(self, teacher_name, teacher)
        self.teacher_module_names = (*self.teacher_module_names, (student_name, teacher_name))
        return teacher

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, then the teachers frozen again: transformers' loading replaces every
        parameter by a new one that requires a gradient, which would hand the teacher to the optimiser (and to DDP)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) with output_loading_info
        for _, teacher_name in model.teacher_module_names:
            getattr(model, teacher_name).requires_grad_(False)
        return loaded

    def student_teacher_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """The (student, teacher) parameter pairs of the EMA, module by module in the order the teachers were added."""
        return [
            pair
            for student_name, teacher_name in self.teacher_module_names
            for pair in zip(getattr(self, student_name).parameters(), getattr(self, teacher_name).parameters())
        ]

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """`teacher <- momentum * teacher + (1 - momentum) * student` for every parameter pair (BYOL eq. 1), in place;
        `momentum` in [0, 1] (1 leaves the teacher as it is), `None` uses `config.momentum`."""
        momentum = self.config.momentum if momentum is None else momentum
        students, teachers = zip(*self.student_teacher_pairs())
        torch._foreach_lerp_(list(teachers), list(students), 1.0 - momentum)

    @torch.no_grad()
    def update_after_step(self, momentum: float | None, state_updates: list[dict[str, torch.Tensor]]) -> None:
        """Called by `SSLTrainer` after each optimizer step (`SSLStateUpdateCallback`) with this step's `momentum`
        (cosine schedule; `None` uses `config.momentum`) and the `state_update`s of its micro-batches (for the
        subclasses that keep other state): the teacher EMA."""
        self.momentum_update(momentum)


def check_teacher_sharding(model: nn.Module, distributed_type: str, zero_stage: int | None = None) -> None:
    """Raise a ValueError for sharded parameters (FSDP, DeepSpeed ZeRO-3) and a model with a momentum teacher.

    The teacher EMA reads every student parameter in full; under FSDP or ZeRO-3 each process only holds a shard (or an
    empty placeholder) of them, so the update would silently average the wrong numbers. DDP and DeepSpeed ZeRO stages
    1-2 keep full parameters on every process and are supported.

    Args:
        model (`torch.nn.Module`): the (unwrapped) method model; it has a momentum teacher when it defines
            `student_teacher_pairs` or `momentum_update` (every `MomentumTeacher` does).
        distributed_type (`str`): accelerate's `DistributedType` value (`"FSDP"`, `"DEEPSPEED"`, `"MULTI_GPU"`...).
        zero_stage (`int`, *optional*): the DeepSpeed ZeRO stage when `distributed_type` is `"DEEPSPEED"`.
    """
    if not (hasattr(model, "student_teacher_pairs") or hasattr(model, "momentum_update")):
        return
    distributed_type = str(getattr(distributed_type, "value", distributed_type)).upper()
    if distributed_type == "FSDP" or (distributed_type == "DEEPSPEED" and zero_stage == 3):
        received = "FSDP" if distributed_type == "FSDP" else "DeepSpeed ZeRO stage 3"
        raise ValueError(
            f"{type(model).__name__} has a momentum teacher, whose EMA update needs the full student parameters, but "
            f"{received} shards them across processes. Train it with DDP (`accelerate launch --multi_gpu`, "
            "recipes/accelerate_configs/multi_gpu.yaml) or DeepSpeed ZeRO stage 1 or 2 "
            "(recipes/accelerate_configs/deepspeed_zero2.yaml); FSDP and ZeRO-3 suit methods without a teacher "
            "(SimCLR)."
        )

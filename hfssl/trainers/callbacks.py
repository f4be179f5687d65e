"""The callbacks SSL trainers share: the SSL state update after each optimizer step (on `cosine_schedule`, defined in
`hfssl.models.teacher`), DINO's weight-decay schedule, and the freezing of parameters for the first steps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hfssl.models.teacher import cosine_schedule

__all__ = ["CancelGradientsCallback", "SSLStateUpdateCallback", "WeightDecayScheduleCallback", "cosine_schedule"]


class SSLStateUpdateCallback(TrainerCallback):
    """After every optimizer step, calls `model.update_after_step(momentum, state_updates)` on models that have it:
    the EMA teacher update on the cosine momentum schedule, then queue writes and the like. Registered by `SSLTrainer`
    before any checkpoint callback runs, so checkpoints hold the updated state.

    Args:
        trainer (`Trainer`): the trainer whose model it updates; it hands over the forward passes' state updates
            (`take_state_updates()`) and logs the momentum (`record_metric(name, value)`), as `SSLTrainer` does.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def momentum(self, step: int, total_steps: int) -> float | None:
        """The teacher momentum after optimizer step `step` (0-based) of `total_steps`, or None when the model has no
        momentum settings: `cosine_schedule(step, total_steps, start, end)`, as BYOL's `target_ema(global_step)` and
        DINO's `momentum_schedule[it]` (`start` at the first update, never quite `end`, so a one-step run still moves
        the teacher); `start`/`end` from `args.teacher_momentum(_final)`, else from the config's `momentum(_final)`."""
        args, config = self.trainer.args, getattr(self.trainer.accelerator.unwrap_model(self.trainer.model), "config", None)
        start = getattr(args, "teacher_momentum", None)
        start = start if start is not None else getattr(config, "momentum", None)
        end = getattr(args, "teacher_momentum_final", None)
        end = end if end is not None else getattr(config, "momentum_final", None)
        if start is None:
            return None
        return cosine_schedule(step, total_steps, start, start if end is None else end)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        updates = self.trainer.take_state_updates()
        if not hasattr(model, "update_after_step"):
            return
        momentum = self.momentum(state.global_step - 1, state.max_steps)  # Trainer has already counted the step
        model.update_after_step(momentum, updates)
        if momentum is not None:
            self.trainer.record_metric("teacher/momentum", momentum)


class WeightDecayScheduleCallback(TrainerCallback):
    """Before each optimizer step k, sets the weight decay of the decayed parameter groups to
    `cosine_schedule(k, max_steps, args.weight_decay, args.weight_decay_final)` (DINO's `wd_schedule`).

    A group is decayed when all its parameters are among `trainer.get_decay_parameter_names(model)`; the value is
    logged through `trainer.record_metric` (`SSLTrainer`).
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def weight_decay(self, step: int, total_steps: int) -> float:
        """The weight decay of optimizer step `step` (0-based)."""
        args = self.trainer.args
        return cosine_schedule(step, total_steps, args.weight_decay, args.weight_decay_final)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if getattr(args, "weight_decay_final", None) is None or self.trainer.optimizer is None:
            return
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        names = set(self.trainer.get_decay_parameter_names(model))
        decayed = {id(parameter) for name, parameter in model.named_parameters() if name in names}
        value = self.weight_decay(state.global_step, state.max_steps)
        for group in self.trainer.optimizer.param_groups:
            if group["params"] and all(id(parameter) in decayed for parameter in group["params"]):
                group["weight_decay"] = value
        self.trainer.record_metric("optimizer/weight_decay", value)


class CancelGradientsCallback(TrainerCallback):
    """Drops the gradients (`grad = None`) of some parameters just before the optimizer steps of the first
    `steps` steps, so the optimizer skips them entirely (no update, no weight decay, no momentum): DINO's frozen last
    layer, SwAV's frozen prototypes. Trainer clips the gradients before this hook, as the references do.

    Args:
        trainer (`Trainer`): the trainer, whose unwrapped model `parameters` receives.
        parameters (`Callable`): model -> the parameters to freeze.
        steps (`Callable`): model -> the number of optimizer steps to freeze them for; `None` means one epoch of
            this run (its optimizer steps per epoch: batches per process / gradient accumulation).
    """

    def __init__(
        self,
        trainer: Trainer,
        parameters: Callable[[nn.Module], list[torch.nn.Parameter]],
        steps: Callable[[nn.Module], int | None],
    ) -> None:
        self.trainer, self.parameters, self.steps = trainer, parameters, steps
        self.epoch_steps: int | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, train_dataloader=None, **kwargs
    ) -> None:
        self.epoch_steps = None
        with contextlib.suppress(TypeError):  # an iterable dataset has no epoch length
            self.epoch_steps = max(1, len(train_dataloader) // args.gradient_accumulation_steps)

    def frozen_steps(self, model: nn.Module) -> int:
        """The number of optimizer steps the parameters stay frozen."""
        steps = self.steps(model)
        if steps is not None:
            return int(steps)
        if self.epoch_steps is None:
            raise ValueError(
                "A freeze length of None means one epoch, but the train dataloader has no length (an iterable "
                "dataset); set the config's freeze steps (e.g. DINOConfig(freeze_last_layer_steps=...)) explicitly."
            )
        return self.epoch_steps

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        if state.global_step < self.frozen_steps(model):
            for parameter in self.parameters(model):
                parameter.grad = None

"""The callback that updates SSL state after each optimizer step, on the momentum schedule `cosine_schedule`
(defined with the momentum teacher, `hfssl.models.teacher`; importable from here too)."""

from __future__ import annotations

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hfssl.models.teacher import cosine_schedule

__all__ = ["SSLStateUpdateCallback", "cosine_schedule"]


class SSLStateUpdateCallback(TrainerCallback):
    """After every optimizer step, calls `model.update_after_step(momentum, state_updates)` on models that have it:
    the EMA teacher update on the cosine momentum schedule, then queue writes and the like.

    The update after optimizer step k (0-based: `state.global_step - 1`, as Trainer has already counted the step)
    uses `cosine_schedule(k, max_steps, start, end)`, as BYOL's `target_ema(global_step)` and DINO's
    `momentum_schedule[it]`: `start` at the first update, never quite `end` (a one-step run still moves the teacher).
    `start`/`end` come from `SSLTrainingArguments.teacher_momentum(_final)` or else the model config's `momentum(_final)`.
    Registered by `SSLTrainer` itself, before any checkpoint callback runs, so checkpoints hold the updated state.

    Args:
        trainer (`Trainer`): the trainer whose model it updates; it hands over the forward passes' state updates
            (`take_state_updates()`) and logs the momentum (`record_metric(name, value)`), as `SSLTrainer` does.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def momentum(self, step: int, total_steps: int) -> float | None:
        """The teacher momentum of the update after optimizer step `step` (0-based) of `total_steps`, or None when the
        model has no momentum settings."""
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
        momentum = self.momentum(state.global_step - 1, state.max_steps)
        model.update_after_step(momentum, updates)
        if momentum is not None:
            self.trainer.record_metric("teacher/momentum", momentum)

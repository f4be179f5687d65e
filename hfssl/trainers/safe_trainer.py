"""`SafeTrainer`: `transformers.Trainer` that a long run can be trusted to: crash-safe checkpoints, a finished run
that stays finished, and a stop (or a skipped step) at the first non-finite input or loss.

Every hfssl trainer derives from it, and the recipes that train a plain transformers model (MLM, CLM, T5, SimCSE,
Word2Vec, MAE) use it in place of `Trainer`. What it adds, each described at its method: checkpoints that appear only
once complete (`_save_checkpoint`, `hfssl.trainers.checkpoints`) and resumes from the last complete one (`train`);
a finished run that stays finished (`_init_training_state`); the seeded collator's generator saved and restored
with Trainer's RNG states (`_save_rng_state`, `_load_from_checkpoint`); the first non-finite input, loss or
parameter stopping training, or with `args.skip_non_finite_steps=True` skipping the step (`training_step`); hfssl's
model card and a single upload to the Hub (`create_model_card`, `push_to_hub`).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hfssl.export import create_hub_repo, push_folder_to_hub, write_model_card
from hfssl.trainers.checkpoints import (
    STAGING_DIR,
    TRAINER_STATE_NAME,
    publish_checkpoint,
    resolve_resume_from_checkpoint,
    rotate_complete_checkpoints,
)

logger = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """Training met a non-finite (nan or inf) input, loss or parameter."""


def named_tensors(value: Any, name: str) -> Iterable[tuple[str, torch.Tensor]]:
    """The tensors of a nested batch (dicts, lists, tuples), each with a path such as `pixel_values[1]`."""
    if torch.is_tensor(value):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from named_tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from named_tensors(item, f"{name}[{index}]")


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """A description of the first floating-point tensor that holds a nan or inf (its name and, for a batch, the
    first bad example along dimension 0), or None when all are finite."""
    for name, tensor in tensors:
        if tensor is None or not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor.detach())
        if bool(finite.all()):
            continue
        if tensor.ndim == 0:
            return f"{name} (= {tensor.item()})"
        bad = (~finite).flatten(1).any(dim=1) if tensor.ndim > 1 else ~finite
        index = int(bad.nonzero()[0, 0])
        return f"{name}, example/row {index} of {tensor.shape[0]} (shape {tuple(tensor.shape)})"
    return None


def collator_generator(collator: Any) -> torch.Generator | None:
    """The `torch.Generator` a collator draws its randomness from in the main process, if it exposes one
    (hfssl's collators keep a `WorkerSeededGenerator` in `_rng`; a plain `generator` attribute works too). None when
    the collator draws from torch's global RNG."""
    holder = getattr(collator, "_rng", None)
    if holder is not None and callable(getattr(holder, "get", None)):
        return holder.get()
    generator = getattr(collator, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


class GeneratorTrackingCollator:
    """Wraps a collator and remembers its generator state before each batch it produces, so a checkpoint can store
    the state before the first batch training has not consumed yet (DataLoaders fetch batches ahead)."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.produced = 0
        self.states: dict[int, torch.Tensor] = {}

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        generator = collator_generator(self.collator)
        if generator is not None:
            self.states[self.produced] = generator.get_state()
            self.states.pop(self.produced - 64, None)
        self.produced += 1
        return self.collator(examples)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["collator"], name)


class SafeTrainer(Trainer):
    """`transformers.Trainer` with crash-safe checkpoints, exact resume of finished runs and non-finite checks (see
    the module docstring). Takes exactly Trainer's arguments."""

    _staging_run_dir: str | None = None
    _card: tuple[str, dict[str, Any]] | None = None  # folder and arguments of the last `create_model_card`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches_consumed = 0
        if collator_generator(self.data_collator) is not None and self.args.dataloader_num_workers == 0:
            self.data_collator = GeneratorTrackingCollator(self.data_collator)

    @property
    def inner_collator(self) -> Any:
        """The collator the trainer was given (without the generator-tracking wrapper)."""
        collator = self.data_collator
        return collator.collator if isinstance(collator, GeneratorTrackingCollator) else collator

    # ---- resume -------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None, **kwargs: Any) -> Any:
        """Trainer's `train`; `resume_from_checkpoint=True` (or "true") picks the last *complete* checkpoint of
        `args.output_dir`, and a path to an incomplete checkpoint is refused (see `resolve_resume_from_checkpoint`)."""
        checkpoint = resolve_resume_from_checkpoint(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume_from_checkpoint=checkpoint, trial=trial, **kwargs)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial):
        """Trainer's; a checkpoint already at `max_steps` leaves no epoch to run (Trainer would train one more step
        before its end-of-step check)."""
        epochs_trained, steps_in_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if resume_from_checkpoint is not None and self.state.global_step >= max_steps:
            logger.warning(
                "%s is at step %d and max_steps is %d: the run has finished, nothing left to train (raise max_steps "
                "or num_train_epochs to train further).", resume_from_checkpoint, self.state.global_step, max_steps,
            )
            return num_train_epochs, 0
        return epochs_trained, steps_in_epoch

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        """Evaluation augments with a copy of the collator, leaving the training augmentation stream untouched."""
        training_collator = self.data_collator
        self.data_collator = copy.deepcopy(self.inner_collator)
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator

    # ---- checkpoints: the collator's generator joins Trainer's RNG states ----------------------------------------

    def _collator_rng_file(self, directory: str) -> str:
        return os.path.join(directory, f"collator_rng_state_{self.args.process_index}.pth")

    def _save_rng_state(self, output_dir: str) -> None:
        """Save Trainer's RNG states plus the collator's generator (augmentations drawn in the main process, i.e.
        `dataloader_num_workers=0`; worker processes re-seed theirs when the resumed run starts its iterator)."""
        super()._save_rng_state(output_dir)
        tracker = self.data_collator
        if isinstance(tracker, GeneratorTrackingCollator):
            state = tracker.states.get(self._batches_consumed)
            state = state if state is not None else collator_generator(tracker.collator).get_state()
            torch.save({"generator": state, "batches_consumed": self._batches_consumed}, self._collator_rng_file(output_dir))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Load the checkpoint, and the collator's generator before any batch is drawn (Trainer restores its own RNG
        states only after fetching the first resumed batch)."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        checkpoint, tracker = resume_from_checkpoint, self.data_collator
        seeded = collator_generator(self.inner_collator) is not None
        if checkpoint is not None and self.args.dataloader_num_workers > 0 and seeded:
            logger.warning(
                "Resuming with dataloader_num_workers=%d: the workers re-seed their augmentation generators, so the "
                "views after the resume differ from those of an uninterrupted run (weights, optimizer, schedules and "
                "SSL state resume exactly). For a bit-exact continuation resume with dataloader_num_workers=0.",
                self.args.dataloader_num_workers,
            )
        if checkpoint is None or not isinstance(tracker, GeneratorTrackingCollator):
            return
        if os.path.isfile(self._collator_rng_file(checkpoint)):
            state = torch.load(self._collator_rng_file(checkpoint), weights_only=True)
            collator_generator(tracker.collator).set_state(state["generator"])
            self._batches_consumed = tracker.produced = int(state["batches_consumed"])
            tracker.states.clear()

    # ---- crash-safe checkpoints ---------------------------------------------------------------------------------

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging_run_dir if self._staging_run_dir is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Trainer's checkpoint, written to `<output_dir>/.incomplete-checkpoints/checkpoint-N`, flushed to disk
        and renamed to `<output_dir>/checkpoint-N` in one step; then older complete checkpoints are rotated."""
        bad = first_non_finite(self.accelerator.unwrap_model(self.model).named_parameters())
        if bad is not None:
            raise NonFiniteError(
                f"Not saving the checkpoint of step {self.state.global_step}: parameter {bad} is not finite (the "
                "last optimizer step diverged; lower the learning rate, clip gradients with max_grad_norm, or use "
                "bf16 instead of fp16). The earlier checkpoints are intact."
            )
        run_dir = self._get_output_dir(trial)
        staging, name = os.path.join(run_dir, STAGING_DIR), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # what a run killed while saving or rotating left there
            os.makedirs(staging)
        self.accelerator.wait_for_everyone()
        self._staging_run_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_run_dir = None
        self.accelerator.wait_for_everyone()  # every process has written its RNG state into the staged folder
        final = os.path.join(run_dir, name)
        if self.args.should_save:
            staged = os.path.join(staging, name)
            if self.state.best_global_step:  # Trainer looked for the best checkpoint in the staging folder
                best = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
                if self.state.best_global_step == self.state.global_step or os.path.isdir(best):
                    self.state.best_model_checkpoint = best
                    self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
            publish_checkpoint(staged, final)
            rotate_complete_checkpoints(run_dir, self.args.save_total_limit, {final, self.state.best_model_checkpoint})
        self.accelerator.wait_for_everyone()

    # ---- non-finite inputs and losses ---------------------------------------------------------------------------

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """Trainer's step between two checks: the batch's floating-point inputs before, the loss after. Counts the
        batches consumed (to checkpoint the collator's generator at the right batch)."""
        self._batches_consumed += 1
        step = self.state.global_step + 1
        bad_input = first_non_finite(named_tensors(inputs, ""))
        if bad_input is not None:
            return self._non_finite(step, f"input {bad_input} is not finite", model, inputs)
        loss = self.forward_backward(model, inputs, num_items_in_batch)
        if not bool(torch.isfinite(loss.detach()).all()):
            cause = first_non_finite(self.accelerator.unwrap_model(model).named_parameters())
            cause = f"parameter {cause}" if cause else "the forward pass produced it from finite inputs and parameters"
            return self._non_finite(step, f"the loss is {loss.detach().flatten()[0].item()} ({cause})", model, inputs)
        return loss

    def forward_backward(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """The forward and backward pass of one batch (Trainer's `training_step`); subclasses change how."""
        return super().training_step(model, inputs, num_items_in_batch)

    def _non_finite(self, step: int, problem: str, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """Stop with an error naming the problem, or (with `args.skip_non_finite_steps`, while every parameter is
        finite) drop the step's gradients so the optimizer leaves the weights unchanged, and warn."""
        parameters_finite = first_non_finite(self.accelerator.unwrap_model(model).named_parameters()) is None
        if not (getattr(self.args, "skip_non_finite_steps", False) and parameters_finite):
            raise NonFiniteError(
                f"Step {step}: {problem}. Training stopped before the optimizer step, so no checkpoint holds non-finite "
                "weights. Check the data (e.g. images or features with nan), lower the learning rate or clip gradients "
                "(max_grad_norm); to skip such steps instead, set skip_non_finite_steps=True (SSLTrainingArguments)."
            )
        logger.warning("Skipping step %d: %s; its gradients are dropped.", step, problem)
        model.zero_grad(set_to_none=True)  # optimizers leave parameters without a gradient untouched
        self.drop_step_state()
        return torch.zeros((), device=self.args.device)

    def drop_step_state(self) -> None:
        """Forget what the skipped step's forward passes recorded for after the optimizer step (nothing here;
        `SSLTrainer` drops its state updates)."""

    # ---- the Hub: hfssl's card, one commit ----------------------------------------------------------------------

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Trainer's (called at init when `args.push_to_hub`): create the repository `args.hub_model_id` (default:
        the output folder's name), through `create_hub_repo`, whose error says how to upload the folder later."""
        if not self.is_world_process_zero():
            return
        args = self.args
        self.hub_model_id = create_hub_repo(args.hub_model_id or Path(args.output_dir).absolute().name,
                                            token if token is not None else args.hub_token,
                                            private if private is not None else args.hub_private_repo, args.output_dir)
        self.push_in_progress = None

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Nothing: no upload per checkpoint; `push_to_hub` uploads once, with the card."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's, without its upload: `push_to_hub` uploads once, with the card."""
        super().save_model(output_dir, _internal_call=True)

    def create_model_card(self, folder: str | os.PathLike | None = None, **card: Any) -> ModelCard | None:
        """Write hfssl's model card (`hfssl.export.write_model_card`: method, data, metrics, hyperparameters, training
        curve, usage) as `README.md` of `folder` (default `args.output_dir`), on the main process; once the Hub
        repository exists (`args.push_to_hub`), the usage code loads from it. `push_to_hub` uploads that folder.

        Args:
            folder (*optional*): e.g. the folder `hfssl.export.save_backbone` wrote (then pass `encoder=`).
            **card: `write_model_card`'s keyword arguments (`method`, `dataset`, `license`, `metrics`, `usage`, ...).
        """
        if not self.is_world_process_zero():
            return None
        self._card = (str(folder if folder is not None else self.args.output_dir), card)
        return write_model_card(self._card[0], self, **{"repo_id": self.hub_model_id, **card})

    def push_to_hub(self, commit_message: str = "End of training", token: str | None = None,
                    private: bool | None = None, **card: Any) -> str | None:
        """Upload the folder of the last `create_model_card` (default `args.output_dir`) to `args.hub_model_id` in one
        commit (`push_folder_to_hub`; no checkpoints), its card rewritten first with `card`'s arguments and usage code
        that loads from the repository. Save the model first (`save_model`). Call it on every process; only the main
        one uploads.

        Returns:
            The URL of the commit on the main process, else None.
        """
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        if not self.is_world_process_zero():
            return None
        folder, written = self._card or (self.args.output_dir, {})
        self.create_model_card(folder, **{**written, **card})
        return push_folder_to_hub(folder, self.hub_model_id, token if token is not None else self.args.hub_token,
                                  private if private is not None else self.args.hub_private_repo, commit_message)

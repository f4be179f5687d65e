"""`SSLTrainer`: the `transformers.Trainer` plumbing shared by every self-supervised method.

Legend: B batch, V views, P projection dim.

A method model only needs `forward(pixel_values=[view, ...]) -> SSLModelOutput` and, if it has state to update after
the optimizer step, `update_after_step(momentum, state_updates)` (`SSLStateUpdateCallback`: EMA teacher, queue
writes). Its state lives in parameters and persistent buffers and its schedules are functions of the step, so
Trainer checkpoints (with Trainer's RNG states) resume exactly. For `args.gradient_cache_chunk_size`
(`hfssl.losses.grad_cache`) it splits `forward` into `embed(pixel_values)` (with gradient), optionally
`embed_targets(pixel_values)` (without, e.g. a teacher's keys) and `loss_from_embeddings(embeddings, targets)`.
What the trainer adds (metrics and collapse signals, the views' side, the optimiser's groups, the distributed checks)
is described at each method.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.distributed import average_across_processes, average_gradients, convert_sync_batchnorm
from hfssl.losses.grad_cache import cached_gradient_backward
from hfssl.models.teacher import check_teacher_sharding
from hfssl.optim import LARS
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.callbacks import SSLStateUpdateCallback
from hfssl.trainers.collapse import CollapseGuardCallback, effective_rank, embedding_std
from hfssl.trainers.image_size import (
    batch_image_size, collator_image_size, default_view_size, record_training_image_size
)
from hfssl.trainers.safe_trainer import SafeTrainer


def constant_factor(step: int) -> float:
    """The learning-rate factor of a group that keeps its base rate (a plain function: `LambdaLR` does not save it)."""
    return 1.0


class SSLTrainer(SafeTrainer):
    """A `Trainer` for self-supervised method models (`SimCLRModel`, `MoCoModel`, ...).

    A method's trainer declares `model_class` and its `default_arguments` (and overrides what it adds: DINO's
    schedules, SwAV's frozen prototypes); the shared `__init__` builds the model from a backbone name, the paper's
    views and the arguments from those.

    Args:
        model (`PreTrainedModel` or `str`): a method model returning `SSLModelOutput`, or (for a method trainer) a
            backbone name to build the method model from.
        args (`SSLTrainingArguments`, *optional*): defaults to `arguments_class(**default_arguments)`
            (`SSLTrainingArguments("outputs/<method>")`). A plain `TrainingArguments` is accepted if
            `remove_unused_columns=False`.
        data_collator (`Callable`, *optional*): a multi-view collator returning `{"pixel_values": [view, ...], ...}`;
            defaults to the method's paper views (`default_data_collator`).
        train_dataset, eval_dataset, callbacks, **kwargs: as for `transformers.Trainer`.

    Attributes:
        training_image_size (`int` or `None`): the side in pixels of the largest view training sees, the collator's
            until the first step (None when it does not say); model cards and exports read it.
        embedding_dim (`int` or `None`): P, the dimension of the embeddings `embedding/std` is measured on.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    # What a method's trainer declares (most method trainers are only this declaration):
    model_class: type | None = None  # the method model it trains; a backbone name builds one; None: any SSL model
    arguments_class: type = SSLTrainingArguments  # built when no `args` are given, with `default_arguments`
    default_arguments: dict[str, Any] = {"output_dir": "outputs/ssl"}
    collator_example: str | None = None  # the collator to pass instead, with {size}; None: from the model's views

    def __init__(
        self,
        model: nn.Module | str,
        args: SSLTrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        callbacks: list | None = None,
        **kwargs: Any,
    ) -> None:
        model = self.build_model(model)
        if data_collator is None:
            data_collator = self.default_data_collator(model, kwargs.get("processing_class"), train_dataset)
        args = args if args is not None else self.arguments_class(**self.default_arguments)
        if args.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns=True would drop the image column before the multi-view collator sees it; use "
                "SSLTrainingArguments (which defaults to False) or pass remove_unused_columns=False."
            )
        if data_collator is None:
            raise ValueError(
                f"{type(self).__name__} needs a multi-view `data_collator` returning {{'pixel_values': [views]}}, "
                "e.g. DataCollatorForMultiView.simclr(image_size=32)."
            )
        if getattr(args, "sync_batchnorm", False):
            model = convert_sync_batchnorm(model, args.device)
        if getattr(args, "channels_last", False):
            model = model.to(memory_format=torch.channels_last)
        if getattr(data_collator, "photometric_on_device", False) is None and args.device.type != "cpu":
            data_collator.photometric_on_device = True  # "auto": the photometric half on the accelerator (`finish_views`)
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, callbacks=callbacks, **kwargs)  # fmt: skip
        self._metrics: dict[str, dict[str, list[torch.Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._state_updates: list[dict[str, torch.Tensor]] = []
        self.callback_handler.callbacks.insert(0, SSLStateUpdateCallback(self))
        self.embedding_dim: int | None = None
        self.training_image_size: int | None = collator_image_size(data_collator)
        if getattr(args, "collapse_action", "warn") != "none":
            self.add_callback(CollapseGuardCallback(self))
        self._check_distributed_setup()
        if getattr(args, "fixed_predictor_lr", False) and (self.optimizer is not None or self.lr_scheduler is not None):
            raise ValueError(
                "fixed_predictor_lr=True applies to the optimiser and scheduler the trainer builds, but `optimizers` "
                "were given; give the predictor its own parameter group with a constant schedule there, or drop the flag."
            )

    @classmethod
    def build_model(cls, model: nn.Module | str) -> nn.Module:
        """`model`, checked to be a `model_class`; a backbone name (timm name, Hub id or folder) builds
        `model_class(model_class.config_class(backbone_name=model))` with the method's paper defaults."""
        if isinstance(model, str):
            if cls.model_class is None:
                raise TypeError(f"{cls.__name__} trains any SSL model: pass the model, not the name {model!r}.")
            return cls.model_class(cls.model_class.config_class(backbone_name=model))
        if cls.model_class is not None and not isinstance(model, cls.model_class):
            raise TypeError(
                f"{cls.__name__} needs a {cls.model_class.__name__} or a backbone name; got {type(model).__name__}."
            )
        return model

    def default_data_collator(self, model: nn.Module, processing_class: Any = None, train_dataset: Any = None) -> Any:
        """The model's paper views (`model.views_for(config)`, `DataCollatorForMultiView.paper_views`) with the
        backbone's normalisation, at `default_view_size`; None for a model without image views."""
        views = model.views_for(model.config) if hasattr(model, "views_for") else None
        if views is None:
            return None
        data_config = model.backbone.data_config
        side = "global_size" if views in ("dino", "swav") else "image_size"
        size = self.default_view_size(data_config, train_dataset, f"DataCollatorForMultiView.{views}({side}={{size}})")
        return DataCollatorForMultiView.paper_views(views, size, mean=data_config["mean"], std=data_config["std"])

    def default_view_size(self, data_config: dict[str, Any], train_dataset: Any, example: str | None = None) -> int:
        """The default views' side (`hfssl.trainers.image_size.default_view_size`), logged with how to change it:
        `example`, else `collator_example` (the collator to pass instead, with `{size}`)."""
        example = example or self.collator_example or "a data_collator with image_size={size}"
        return default_view_size(int(data_config["input_size"][-1]), train_dataset, type(self).__name__, example)

    def _check_distributed_setup(self) -> None:
        """Refuse, at start, the combinations whose maths would silently be wrong (see `check_teacher_sharding`)."""
        model, distributed_type = self.accelerator.unwrap_model(self.model), self.accelerator.distributed_type
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        check_teacher_sharding(model, distributed_type, getattr(plugin, "zero_stage", None))
        if getattr(self.args, "gradient_cache_chunk_size", None) is None:
            return
        if not all(hasattr(model, name) for name in ("embed", "loss_from_embeddings")):
            raise TypeError(
                f"gradient_cache_chunk_size needs a model with `embed` and `loss_from_embeddings` (SimCLRModel, "
                f"MoCoModel); {type(model).__name__} has not both. Use gradient accumulation instead."
            )
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "gradient_cache_chunk_size back-propagates outside the model wrapper, which DeepSpeed and FSDP do not "
                f"allow (this run uses {distributed_type}). Use it with one process or DDP (multi_gpu.yaml)."
            )

    def forward_backward(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """Trainer's forward and backward, or with `args.gradient_cache_chunk_size` the cached-gradient one."""
        if getattr(self.args, "gradient_cache_chunk_size", None) is None:
            return super().forward_backward(model, inputs, num_items_in_batch)
        return self.cached_gradient_training_step(model, inputs)

    def drop_step_state(self) -> None:
        """A skipped step's state updates (teacher, queue, centre) are dropped with its gradients."""
        self._state_updates.clear()

    def cached_gradient_training_step(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """The forward and backward of one batch in chunks of `args.gradient_cache_chunk_size` images (GradCache,
        `cached_gradient_backward`), the teacher's targets (if any) embedded first without gradient. The gradients are
        averaged over processes here, since the backward passes run outside DDP's forward."""
        model.train()
        inputs = self.finish_views(self._prepare_inputs(inputs))
        self._check_inputs(inputs)
        self._record_image_size(inputs, model)
        module = self.accelerator.unwrap_model(model)
        chunks = self.gradient_cache_chunks(inputs)
        scale = 1.0 / self.current_gradient_accumulation_steps
        # accelerate's mixed precision wraps `forward` only; `embed` needs the autocast context itself.
        with self.compute_loss_context_manager(), self.accelerator.autocast():
            targets = None
            if hasattr(module, "embed_targets"):
                with torch.no_grad():
                    targets = torch.cat([module.embed_targets(chunk) for chunk in chunks], dim=1)
            outputs = cached_gradient_backward(
                module.embed, lambda embeddings: module.loss_from_embeddings(embeddings, targets), chunks,
                backward=lambda loss: self.accelerator.backward(loss * scale), dim=1,
            )  # fmt: skip
        if self.accelerator.sync_gradients:
            average_gradients(module.parameters())
        self._record_outputs(outputs, "train")
        return outputs.loss * scale

    def gradient_cache_chunks(self, inputs: dict[str, Any]) -> list[Any]:
        """The batch cut into chunks of `args.gradient_cache_chunk_size` images: each chunk a list of views."""
        chunk_size = self.args.gradient_cache_chunk_size
        return [list(views) for views in zip(*(view.split(chunk_size) for view in inputs["pixel_values"]))]

    # ---- loss and metrics -------------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Views in, loss out: `model(pixel_values=[view, ...])` returns the loss and what to log."""
        inputs = self.finish_views(inputs)
        self._check_inputs(inputs)
        if model.training:
            self._record_image_size(inputs, model)
        outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
        self._record_outputs(outputs, "train" if model.training else "eval")
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def finish_views(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run the photometric half of the augmentation here, on the training device, for batches made by a collator
        with `photometric_on_device=True` (uint8 crops + `photometric_params`), and with `args.channels_last` put the
        4-D views in channels-last memory format; other batches pass unchanged."""
        if "photometric_params" in inputs:
            collator = self.inner_collator
            if not callable(getattr(collator, "apply_photometric", None)):
                raise TypeError(
                    f"The batch carries 'photometric_params' but the trainer's collator ({type(collator).__name__}) "
                    "has no `apply_photometric` to finish it; use DataCollatorForMultiView(photometric_on_device=True)."
                )
            inputs = collator.apply_photometric(inputs)
        if getattr(self.args, "channels_last", False) and isinstance(inputs.get("pixel_values"), (list, tuple)):
            views = [
                view.contiguous(memory_format=torch.channels_last) if torch.is_tensor(view) and view.ndim == 4 else view
                for view in inputs["pixel_values"]
            ]
            inputs = {**inputs, "pixel_values": views}
        return inputs

    @staticmethod
    def _check_inputs(inputs: dict[str, Any]) -> None:
        if "pixel_values" not in inputs:
            raise ValueError(
                f"SSLTrainer expects batches with 'pixel_values' (a list of views); got keys {sorted(inputs)}. "
                "Use a multi-view collator such as DataCollatorForMultiView."
            )

    def _record_image_size(self, inputs: dict[str, Any], model: nn.Module) -> None:
        """Keep the side of the largest training view in `training_image_size`, and on a change record it in the
        model (`record_training_image_size`: its config and its backbones' `data_config`)."""
        size = batch_image_size(inputs.get("pixel_values"))
        if size is None:
            return
        self.training_image_size = size
        module = self.accelerator.unwrap_model(model)
        if getattr(getattr(module, "config", None), "training_image_size", None) != size:
            record_training_image_size(module, size)

    def _record_outputs(self, outputs: Any, mode: str) -> None:
        """Keep the state update for after the optimizer step, and record the metrics and the collapse signal."""
        if mode == "train" and outputs.state_update:
            self._state_updates.append(outputs.state_update)
        metrics = dict(outputs.metrics or {})
        if outputs.embeddings is not None:
            self.embedding_dim = outputs.embeddings.shape[-1]
            metrics["embedding/std"] = embedding_std(outputs.embeddings)
            if outputs.embeddings.shape[0] > 1:
                metrics["embedding/effective_rank"] = effective_rank(outputs.embeddings)
        for name, value in metrics.items():
            self.record_metric(name, value, mode)

    def take_state_updates(self) -> list[dict[str, torch.Tensor]]:
        """Hand over (and forget) the `state_update`s of the forward passes since the last optimizer step."""
        updates, self._state_updates = self._state_updates, []
        return updates

    def record_metric(self, name: str, value: float | torch.Tensor, mode: str = "train") -> None:
        """Add a value to the averages logged at the next logging step."""
        self._metrics[mode][name].append(torch.as_tensor(value).detach().float())

    def _take_averages(self, mode: str) -> dict[str, float]:
        """The averages of the recorded metrics over the logging window and over processes (a collective: Trainer
        calls `log` and `evaluation_loop` on every process)."""
        averages = {
            name: torch.stack([value.to("cpu") for value in values]).mean().item()
            for name, values in self._metrics[mode].items()
            if values
        }
        self._metrics[mode].clear()
        return average_across_processes(averages)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averages of the training metrics recorded since the last log."""
        if not any(key.startswith("eval_") for key in logs):
            logs = {**logs, **self._take_averages("train")}
            # once per run, resumed runs included (read from the restored log history): the plots' 1/sqrt(P) line
            logged = any("embedding/dim" in entry for entry in self.state.log_history)
            if "embedding/std" in logs and self.embedding_dim is not None and not logged:
                logs["embedding/dim"] = self.embedding_dim
        super().log(logs, start_time)

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        """Trainer's loop; the model's metrics, averaged over the evaluation set, join the returned metrics."""
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        output.metrics.update({f"{prefix}_{name}": value for name, value in self._take_averages("eval").items()})
        return output

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """0: Trainer's estimate (6 x tokens x parameters) is for token models, not for lists of image views."""
        return 0

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor, None, None]:
        """Evaluation reports the SSL loss (no logits, no labels)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ---- optimiser ----------------------------------------------------------------------------------------------

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """Weight decay on weight matrices and kernels only, not on biases, norm parameters or scalars."""
        if getattr(self.args, "exclude_norm_and_bias_from_weight_decay", True):
            return [name for name, parameter in model.named_parameters() if parameter.ndim > 1]
        return super().get_decay_parameter_names(model)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimiser, or LARS when `args.lars` (same parameter groups and weight decay split)."""
        if self.optimizer is None and getattr(self.args, "lars", False):
            args = self.args
            settings = {"lr": args.learning_rate, "momentum": args.lars_momentum}
            self.optimizer_cls_and_kwargs = (LARS, {**settings, "trust_coefficient": args.lars_trust_coefficient})
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if created and getattr(self.args, "fixed_predictor_lr", False):
            predictor = getattr(self.accelerator.unwrap_model(self.model if model is None else model), "predictor", None)
            if not isinstance(predictor, nn.Module):
                raise ValueError(
                    f"fixed_predictor_lr=True needs a model with a `predictor` (SimSiam, BYOL, MoCo v3); "
                    f"{type(self.model).__name__} has none. Drop the flag."
                )
            # each group split in two: the same settings, the predictor's parameters marked to keep the base rate
            in_predictor = {id(parameter) for parameter in predictor.parameters()}
            groups = []
            for group in optimizer.param_groups:
                for fixed in (False, True):
                    params = [p for p in group["params"] if (id(p) in in_predictor) == fixed]
                    if params:
                        groups.append({**group, "params": params, "fixed_lr": fixed})
            optimizer.param_groups[:] = groups  # no step taken yet: no optimiser state to move
        return optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """Trainer's scheduler; with `args.fixed_predictor_lr`, the predictor's groups stay at the base learning rate
        (no warm-up, no decay), as SimSiam's reference code (`--fix-pred-lr`) trains them."""
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if created and getattr(self.args, "fixed_predictor_lr", False):
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                raise ValueError(
                    f"fixed_predictor_lr=True works with the step-function schedules (cosine, linear, constant, ...); "
                    f"lr_scheduler_type={self.args.lr_scheduler_type!r} builds a {type(scheduler).__name__}."
                )
            for index, group in enumerate(scheduler.optimizer.param_groups):
                if group.get("fixed_lr"):
                    scheduler.lr_lambdas[index] = constant_factor
                    group["lr"] = scheduler.base_lrs[index]
            scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
        return scheduler

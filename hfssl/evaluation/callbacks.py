"""`Trainer` callbacks that measure the representation while it is pretrained: weighted kNN (and optionally a linear
probe) on labelled data, logged like any metric and usable for best-checkpoint selection: `Trainer.evaluate` hands
its metrics dict to the callbacks' `on_evaluate` before `_determine_best_metric` reads it (transformers 5.24). The
collapse signal (`"embedding/std"`, SimSiam section 4.1) is logged by `SSLTrainer` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hfssl.data.images import decoded_images
from hfssl.evaluation.features import dataset_features
from hfssl.evaluation.knn import check_neighbour_count, knn_accuracy
from hfssl.evaluation.linear_probe import linear_probe
from hfssl.evaluation.splits import load_evaluation_splits
from hfssl.export import resolve_backbone


class KNNEvaluationCallback(TrainerCallback):
    """Weighted-kNN top-1 (and optionally linear-probe top-1) of the model's backbone (or EMA teacher) during
    pretraining: `"eval_knn/top1"` and, with `linear_probe=True`, `"eval_linear_probe/top1"`.

    Without `eval_steps`, they are computed at each of the trainer's evaluations (`eval_strategy="steps"` or
    `"epoch"`, with an `eval_dataset`) and added to its metrics, so `metric_for_best_model="knn/top1"` (with
    `greater_is_better=True`) selects checkpoints on them; with `eval_steps`, every `eval_steps` optimizer steps.

    Args:
        trainer (`transformers.Trainer`): the `SSLTrainer` whose model is evaluated and whose `log` is used.
        memory_dataset (`datasets.Dataset`): labelled "image"/"label" rows forming the kNN memory and the probe's
            train set (e.g. the train split).
        query_dataset (`datasets.Dataset`): labelled rows to classify (e.g. the test split).
        eval_steps (`int`, *optional*): evaluate every this many optimizer steps instead of at the trainer's
            evaluations. Required when the trainer does not evaluate.
        k (`int`, defaults to 200), temperature (`float`, defaults to 0.1): InstDisc's and DINO's kNN settings (a
            warning when k is not below the memory size, `check_neighbour_count`).
        linear_probe (`bool`, defaults to `False`): also train a linear probe (`hfssl.evaluation.linear_probe`).
        linear_probe_kwargs (`dict`, *optional*): arguments to `linear_probe` (e.g. `{"epochs": 20}`).
        image_size (`int`, *optional*): the side images are resized to; by default the trainer's
            `training_image_size` (the side its collator's views have), else the backbone's `data_config`.
        mean, std (sequences of `float`, *optional*): the normalisation; the backbone's `data_config` by default.
            Pass those the training collator uses.
        batch_size (`int`, defaults to 512): images per forward pass of the feature extraction.
        encoder (`str`, defaults to `"backbone"`): the method model's encoder to evaluate; `"teacher_backbone"` for
            the EMA teacher of BYOL, DINO or MoCo (the encoder DINO's paper evaluates).
    """

    def __init__(
        self, trainer: Trainer, memory_dataset: Any, query_dataset: Any, eval_steps: int | None = None, k: int = 200,
        temperature: float = 0.1, linear_probe: bool = False, linear_probe_kwargs: dict[str, Any] | None = None,
        image_size: int | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
        batch_size: int = 512, encoder: str = "backbone",
    ) -> None:
        resolve_backbone(trainer.model, encoder)  # a bad encoder raises here, not at the first evaluation
        for name, dataset in (("memory_dataset", memory_dataset), ("query_dataset", query_dataset)):
            columns = getattr(dataset, "column_names", None)
            if columns is None or "image" not in columns or "label" not in columns:
                raise ValueError(
                    f"KNNEvaluationCallback needs {name} as a datasets.Dataset with 'image' and 'label' columns; got "
                    f"{type(dataset).__name__} with columns {columns}. Load it with "
                    "hfssl.data.images.load_image_dataset."
                )
        evaluates = str(getattr(trainer.args.eval_strategy, "value", trainer.args.eval_strategy)) != "no"
        if eval_steps is None and not evaluates:
            raise ValueError(
                "KNNEvaluationCallback got eval_steps=None but the trainer never evaluates (eval_strategy='no'); pass "
                "eval_steps=N to evaluate every N steps, or set eval_strategy='steps' with an eval_dataset."
            )
        if eval_steps is not None and eval_steps < 1:
            raise ValueError(f"eval_steps={eval_steps} must be >= 1 optimizer steps, or None.")
        check_neighbour_count(k, len(memory_dataset))
        self.trainer, self.memory_dataset, self.query_dataset = trainer, memory_dataset, query_dataset
        self.eval_steps, self.k, self.temperature = eval_steps, k, temperature
        self.linear_probe, self.linear_probe_kwargs = linear_probe, dict(linear_probe_kwargs or {})
        self.image_size, self.mean, self.std, self.batch_size = image_size, mean, std, batch_size
        self.encoder = encoder

    def compute_metrics(self) -> dict[str, float]:
        """The metrics of the trainer's current model (its backbone in eval mode, no gradient)."""
        model, _ = resolve_backbone(self.trainer.accelerator.unwrap_model(self.trainer.model), self.encoder)
        image_size = self.image_size or getattr(self.trainer, "training_image_size", None)
        options = {"image_size": image_size, "mean": self.mean, "std": self.std, "batch_size": self.batch_size}
        memory, memory_labels = dataset_features(model, self.memory_dataset, **options)
        queries, query_labels = dataset_features(model, self.query_dataset, **options)
        top1 = knn_accuracy(memory, memory_labels, queries, query_labels, self.k, self.temperature)
        metrics = {"eval_knn/top1": top1}
        if self.linear_probe:
            probe = linear_probe(memory, memory_labels, queries, query_labels, **self.linear_probe_kwargs)
            metrics["eval_linear_probe/top1"] = probe.accuracy
        return metrics

    def _log(self, metrics: dict[str, float], control: TrainerControl) -> None:
        """`trainer.log`, keeping the logging decision of this step (`CallbackHandler.on_log` resets `should_log`)."""
        should_log = control.should_log
        self.trainer.log(metrics)
        control.should_log = should_log

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if self.eval_steps is not None and state.global_step % self.eval_steps == 0:
            self._log(self.compute_metrics(), control)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: dict, **kwargs
    ) -> None:
        if self.eval_steps is not None:
            return
        computed = self.compute_metrics()
        metrics.update(computed)  # the dict Trainer's best-checkpoint selection reads
        self._log(computed, control)


def add_knn_evaluation(trainer: Trainer, data_args: Any, encoder: str = "backbone") -> KNNEvaluationCallback | None:
    """Add a `KNNEvaluationCallback` to an image recipe's trainer when `trainer.args.knn_eval_steps` is set
    (`SSLTrainingArguments`: `--knn_eval_steps N --knn_k 20 --knn_temperature 0.1`), and return it; None otherwise.

    The memory is the recipe's labelled training data (`data_args.load("train")`), the queries its test split, else
    its validation split, else a held-out 20% of train (`load_evaluation_splits`, which logs the choice). Images are
    resized to the trainer's `training_image_size`. Metrics: `"eval_knn/top1"` every `knn_eval_steps` steps.

    Args:
        trainer (`SSLTrainer`): built with the recipe's training arguments.
        data_args (`hfssl.data.images.ImageDataArguments`): the recipe's data options.
        encoder (`str`, defaults to `"backbone"`): `"teacher_backbone"` for an EMA teacher (the recipe's
            `--export_encoder`).

    Raises:
        ValueError: when `knn_eval_steps` is set but the data has no "label" column.
    """
    steps = getattr(trainer.args, "knn_eval_steps", None)
    if steps is None:
        return None

    def load(split: str) -> Any:
        return decoded_images(data_args.load(split), data_args.skip_invalid_images)

    memory, queries, description = load_evaluation_splits(load, seed=trainer.args.seed)
    if "label" not in memory.column_names or "label" not in queries.column_names:
        raise ValueError(
            f"knn_eval_steps={steps} needs labelled images (a 'label' column, e.g. class sub-folders of --train_dir); "
            f"the data has columns {memory.column_names}. Drop --knn_eval_steps for unlabelled data."
        )
    callback = KNNEvaluationCallback(trainer, memory, queries, eval_steps=steps, k=trainer.args.knn_k,
                                     temperature=trainer.args.knn_temperature, encoder=encoder)  # fmt: skip
    trainer.add_callback(callback)
    return callback

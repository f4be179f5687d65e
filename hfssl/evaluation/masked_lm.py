"""Held-out metrics for masked language modelling: masked-token accuracy, perplexity, and the
most-frequent-token baseline they should beat."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from datasets import Dataset
from transformers import EvalPrediction, default_data_collator


def most_frequent_token(input_ids: Iterable[list[int]], special_ids: Iterable[int]) -> tuple[int, float]:
    """The most frequent non-special token of a tokenized corpus, and its share of the tokens: predicting it
    everywhere is the baseline a masked LM has to beat."""
    counts = np.bincount(np.fromiter((i for row in input_ids for i in row), dtype=np.int64))
    special = [i for i in special_ids if i < len(counts)]
    counts[special] = 0
    if counts.sum() == 0:
        raise ValueError("The corpus has no ordinary (non-special) token.")
    return int(counts.argmax()), float(counts.max() / counts.sum())


def preprocess_logits_for_masked_lm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For `Trainer(preprocess_logits_for_metrics=...)`: keep the argmax, not (B, L, vocab) logits.

    Models that score only the masked positions (ModernBERT's `sparse_prediction`) return logits of
    shape (num_masked, vocab); their predictions are put back at those positions of a (B, L) tensor.
    """
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = logits.argmax(dim=-1)
    if predictions.shape == labels.shape:
        return predictions
    selected = labels != -100
    if predictions.shape != (int(selected.sum()),):
        raise ValueError(
            f"Cannot align logits of shape {tuple(logits.shape)} with labels of shape {tuple(labels.shape)}."
        )
    full = torch.full_like(labels, -100)
    full[selected] = predictions
    return full


def masked_lm_metrics(baseline_token_id: int | None = None) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for `Trainer` giving `masked_accuracy` over the selected positions and,
    when `baseline_token_id` is given, `baseline_accuracy` of always predicting that token."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predictions = np.asarray(prediction.predictions)
        labels = np.asarray(prediction.label_ids)
        selected = labels != -100
        if not selected.any():
            raise ValueError("No masked position in the evaluation set; check the collator and the data.")
        metrics = {"masked_accuracy": float((predictions[selected] == labels[selected]).mean())}
        if baseline_token_id is not None:
            metrics["baseline_accuracy"] = float((labels[selected] == baseline_token_id).mean())
        return metrics

    return compute_metrics


def premask_dataset(dataset: Dataset, collator, seed: int = 0, batch_size: int = 256) -> Dataset:
    """Mask a tokenized dataset once, with a seeded copy of `collator`, so that every evaluation of
    every run scores the same positions. Rows must already be equal-length blocks (packed text). Returns a
    `datasets.Dataset` with `input_ids`, `attention_mask` and `labels`, for `transformers.default_data_collator`.
    """
    fixed = dataclasses.replace(collator, seed=seed)

    def mask(batch: dict[str, list]) -> dict[str, list]:
        return {key: value.tolist() for key, value in fixed(batch).items()}

    return dataset.map(mask, batched=True, batch_size=batch_size, remove_columns=dataset.column_names)


def evaluate_masked_lm(trainer, eval_dataset: Dataset) -> dict[str, float]:
    """Evaluate `trainer.model` on a pre-masked dataset (see `premask_dataset`) through
    `trainer.evaluate`, so it runs distributed like any evaluation. Adds `eval_perplexity`.
    """
    training_collator = trainer.data_collator
    trainer.data_collator = default_data_collator
    try:
        metrics = trainer.evaluate(eval_dataset=eval_dataset)
    finally:
        trainer.data_collator = training_collator
    metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    return metrics

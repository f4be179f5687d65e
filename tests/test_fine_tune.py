"""Fine-tuning on a fraction of the labels: class-balanced subsets, the backbone trains, accuracy beats chance."""

import math

import pytest
import torch
from transformers import TrainingArguments

from conftest import MEAN, STD, TINY_HEAD, TINY_VIT
from hfssl.data.images import load_digits_dataset
from hfssl.evaluation.fine_tune import (
    BackboneForImageClassification,
    fine_tune,
    label_fraction_subset,
)
from hfssl.models.simclr import SimCLRConfig, SimCLRModel


def test_label_fraction_subset_is_class_balanced_and_seeded():
    digits = load_digits_dataset(image_size=8)
    subset = label_fraction_subset(digits, 0.1, seed=3)
    labels = torch.tensor(digits["label"])
    for label in range(10):
        expected = max(1, round(int((labels == label).sum()) * 0.1))
        assert subset["label"].count(label) == expected
    assert subset["label"] == label_fraction_subset(digits, 0.1, seed=3)["label"]
    assert len(label_fraction_subset(digits, 0.001)) == 10  # at least one example per class
    with pytest.raises(ValueError, match="fraction=0 must lie in"):
        label_fraction_subset(digits, 0)


def test_fine_tune_trains_the_backbone_and_beats_chance(digits_train, digits_test, tmp_path):
    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD))
    before = {name: value.clone() for name, value in model.backbone.state_dict().items()}
    train, test = digits_train, digits_test
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=6, per_device_train_batch_size=16, per_device_eval_batch_size=120,
                             learning_rate=3e-3, remove_unused_columns=False, report_to="none", save_strategy="no",
                             disable_tqdm=True, seed=0, use_cpu=True)
    metrics, trainer = fine_tune(model, train, test, args, label_fraction=0.1, mean=MEAN, std=STD)
    assert isinstance(trainer.model, BackboneForImageClassification)
    assert len(trainer.train_dataset) == len(label_fraction_subset(train, 0.1, seed=0))
    tuned = trainer.model.backbone.state_dict()
    assert all(not torch.equal(before[name], tuned[name]) for name in before if before[name].is_floating_point()
               and "pooler" not in name)  # every backbone weight moved (the unused pooler is frozen)
    assert all(torch.equal(before[name], value) for name, value in model.backbone.state_dict().items())  # input kept
    # Chance is 10% on 360 test digits; 5 sigma of a binomial(360, 0.1) is 5 * sqrt(360 * 0.1 * 0.9) = 28.5 digits.
    assert metrics["eval_accuracy"] > (36 + 5 * math.sqrt(360 * 0.1 * 0.9)) / 360


def test_top_k_accuracy_is_an_evaluate_metric_matching_a_direct_count():
    import evaluate

    from hfssl.evaluation.metrics import TopKAccuracy

    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 6, generator=generator), torch.randint(0, 6, (50,), generator=generator)
    assert isinstance(TopKAccuracy(), evaluate.Metric)
    top1 = (logits.argmax(1) == labels).float().mean().item()
    top3 = sum(int(label) in row.topk(3).indices.tolist() for row, label in zip(logits, labels)) / 50
    assert TopKAccuracy().compute(predictions=logits.numpy(), references=labels.numpy()) == {"accuracy": pytest.approx(top1)}
    both = TopKAccuracy().compute(predictions=logits.numpy(), references=labels.numpy(), k=(1, 3))
    assert both == {"top1_accuracy": pytest.approx(top1), "top3_accuracy": pytest.approx(top3)}
    metric = TopKAccuracy()
    for rows, targets in zip(logits.split(20), labels.split(20)):  # batches accumulate like any evaluate metric
        metric.add_batch(predictions=rows.numpy(), references=targets.numpy())
    assert metric.compute()["accuracy"] == pytest.approx(top1)
    with pytest.raises(ValueError, match=r"k=7 must lie in \[1, 6\]"):
        TopKAccuracy().compute(predictions=logits.numpy(), references=labels.numpy(), k=7)

"""KNNEvaluationCallback fires at the configured steps, its metrics land in the log history, and Trainer's
best-checkpoint selection reads them; the core's collapse signal is logged at every logging step."""

import pytest
import torch
from transformers import ViTConfig

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.data.images import load_digits_dataset
from hfssl.evaluation.callbacks import KNNEvaluationCallback
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments

TINY_VIT = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16,
                     patch_size=8).to_dict()
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def digits():
    data = load_digits_dataset(image_size=16, split="all")
    return data.select(range(64)), data.select(range(64, 96))


def make_trainer(tmp_path, train, **overrides):
    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, projection_hidden_dim=16, projection_dim=8))
    values = {"output_dir": str(tmp_path), "max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
              "report_to": "none", "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "seed": 0}
    values.update(overrides)
    collator = DataCollatorForMultiView.simclr(image_size=16, blur_p=0.0, mean=MEAN, std=STD, seed=0)
    return SimCLRTrainer(model=model, args=SSLTrainingArguments(**values), data_collator=collator, train_dataset=train,
                         eval_dataset=train.select(range(16)))


def test_knn_every_n_steps_lands_in_log_history_with_collapse_signal(digits, tmp_path):
    memory, queries = digits
    trainer = make_trainer(tmp_path, memory)
    trainer.add_callback(KNNEvaluationCallback(trainer, memory, queries, eval_steps=2, k=5, mean=MEAN, std=STD))
    trainer.train()
    history = trainer.state.log_history
    knn = [entry for entry in history if "eval_knn/top1" in entry]
    assert [entry["step"] for entry in knn] == [2, 4]
    assert all(0.0 <= entry["eval_knn/top1"] <= 1.0 for entry in knn)
    losses = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in losses] == [1, 2, 3, 4]
    assert all(entry["embedding/std"] > 0 for entry in losses)  # the core's collapse signal, each logging step


def test_best_checkpoint_is_selected_on_knn(digits, tmp_path):
    memory, queries = digits
    trainer = make_trainer(tmp_path, memory, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                           metric_for_best_model="knn/top1", greater_is_better=True, load_best_model_at_end=True)
    trainer.add_callback(KNNEvaluationCallback(trainer, memory, queries, k=5, mean=MEAN, std=STD, linear_probe=True,
                                               linear_probe_kwargs={"epochs": 5, "learning_rates": [1e-2]}))
    trainer.train()
    knn = [entry for entry in trainer.state.log_history if "eval_knn/top1" in entry]
    assert [entry["step"] for entry in knn] == [2, 4]
    assert all(0.0 <= entry["eval_linear_probe/top1"] <= 1.0 for entry in knn)
    best = max(knn, key=lambda entry: entry["eval_knn/top1"])  # ties: the first, as Trainer's strict comparison
    assert trainer.state.best_metric == best["eval_knn/top1"]
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")


def test_callback_errors(digits, tmp_path):
    memory, queries = digits
    trainer = make_trainer(tmp_path, memory)
    with pytest.raises(ValueError, match="trainer never evaluates"):
        KNNEvaluationCallback(trainer, memory, queries)
    with pytest.raises(ValueError, match="'image' and 'label' columns"):
        KNNEvaluationCallback(trainer, memory.remove_columns("label"), queries, eval_steps=1)


def test_knn_of_the_ema_teacher(digits, tmp_path):
    from hfssl.evaluation.features import dataset_features
    from hfssl.evaluation.knn import knn_accuracy
    from hfssl.models.byol import BYOLConfig, BYOLModel
    from hfssl.trainers import BYOLTrainer

    memory, queries = digits
    torch.manual_seed(0)
    model = BYOLModel(BYOLConfig(backbone_model_config=TINY_VIT, projection_hidden_dim=16, projection_dim=8,
                                 predictor_hidden_dim=16))
    with torch.no_grad():  # a teacher that differs from the student, as after training
        for parameter in model.teacher_backbone.parameters():
            parameter.add_(torch.randn_like(parameter))
    args = SSLTrainingArguments(output_dir=str(tmp_path), report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = BYOLTrainer(model=model, args=args, train_dataset=memory,
                          data_collator=DataCollatorForMultiView.byol(image_size=16, mean=MEAN, std=STD, seed=0))
    metrics = {}
    for encoder in ("backbone", "teacher_backbone"):
        callback = KNNEvaluationCallback(trainer, memory, queries, eval_steps=1, k=5, mean=MEAN, std=STD, encoder=encoder)
        options = {"image_size": 16, "mean": MEAN, "std": STD}
        expected = knn_accuracy(*dataset_features(getattr(model, encoder), memory, **options),
                                *dataset_features(getattr(model, encoder), queries, **options), k=5, temperature=0.1)
        metrics[encoder] = callback.compute_metrics()["eval_knn/top1"]
        assert metrics[encoder] == pytest.approx(expected)
    # the student and the perturbed teacher are different encoders: their features differ
    student = dataset_features(model.backbone, queries, image_size=16, mean=MEAN, std=STD)[0]
    teacher = dataset_features(model.teacher_backbone, queries, image_size=16, mean=MEAN, std=STD)[0]
    assert not torch.allclose(student, teacher)
    with pytest.raises(TypeError, match=r"teacher_backbone.*encoders: \['backbone'\]"):
        KNNEvaluationCallback(make_trainer(tmp_path, memory), memory, queries, eval_steps=1, encoder="teacher_backbone")

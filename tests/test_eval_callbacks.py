"""KNNEvaluationCallback fires at the configured steps, its metrics land in the log history, and Trainer's
best-checkpoint selection reads them; the core's collapse signal is logged at every logging step."""

import pytest
import torch

from conftest import MEAN, STD, TINY_HEAD, TINY_VIT
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.data.images import ImageDataArguments
from hfssl.evaluation.callbacks import KNNEvaluationCallback, add_knn_evaluation
from hfssl.evaluation.features import dataset_features
from hfssl.evaluation.knn import knn_accuracy
from hfssl.evaluation.linear_probe import linear_probe
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments


@pytest.fixture(scope="module")
def digits(digits_train):  # (kNN memory, queries): 64 and 32 images
    return digits_train.select(range(64)), digits_train.select(range(64, 96))


def features(model, dataset):
    """(features, labels) of `dataset` under `model`'s backbone, as the callback is configured below."""
    return dataset_features(model.backbone, dataset, image_size=16, mean=MEAN, std=STD)


def make_trainer(tmp_path, train, **overrides):
    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD))
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
    # Far above chance (measured 0.69 at both steps; a constant encoder scores at most the largest class share of
    # these 32 queries, 6/32 = 0.19; features unrelated to the labels about 0.1), and the step-4 value is that of the
    # final model recomputed here. 4 steps do not beat the untrained encoder (0.72), so no trained-beats-untrained.
    assert all(entry["eval_knn/top1"] > 0.4 for entry in knn)
    memory_features, query_features = (features(trainer.model, data) for data in digits)
    assert knn[-1]["eval_knn/top1"] == pytest.approx(knn_accuracy(*memory_features, *query_features, k=5, temperature=0.1))
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
    # Above chance (measured 0.53 at both steps, against 0.19 at most for a constant encoder, see above)
    assert all(entry["eval_linear_probe/top1"] > 0.3 for entry in knn)
    best = max(knn, key=lambda entry: entry["eval_knn/top1"])  # ties: the first, as Trainer's strict comparison
    assert trainer.state.best_metric == best["eval_knn/top1"]
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    # the model loaded at the end is the best checkpoint's: its metrics, recomputed here, are the best entry's
    memory_features, query_features = (features(trainer.model, data) for data in digits)
    assert best["eval_knn/top1"] == pytest.approx(knn_accuracy(*memory_features, *query_features, k=5, temperature=0.1))
    probe = linear_probe(*memory_features, *query_features, epochs=5, learning_rates=[1e-2])
    assert best["eval_linear_probe/top1"] == pytest.approx(probe.accuracy)


def test_callback_errors(digits, tmp_path):
    memory, queries = digits
    trainer = make_trainer(tmp_path, memory)
    with pytest.raises(ValueError, match="trainer never evaluates"):
        KNNEvaluationCallback(trainer, memory, queries)
    with pytest.raises(ValueError, match="'image' and 'label' columns"):
        KNNEvaluationCallback(trainer, memory.remove_columns("label"), queries, eval_steps=1)


def test_knn_of_the_ema_teacher(digits, tmp_path):
    from hfssl.models.byol import BYOLConfig, BYOLModel
    from hfssl.trainers import BYOLTrainer

    memory, queries = digits
    torch.manual_seed(0)
    model = BYOLModel(BYOLConfig(backbone_model_config=TINY_VIT, **TINY_HEAD, predictor_hidden_dim=16))
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


def test_recipes_add_knn_during_training_from_the_training_arguments(tmp_path, caplog):
    """`--knn_eval_steps 2 --knn_k 5` and `add_knn_evaluation(trainer, data_args)`: memory the recipe's train images,
    queries its test split, every 2 steps; nothing without the flag."""
    data_args = ImageDataArguments(image_size=16, max_train_samples=64)
    train = data_args.load()
    assert add_knn_evaluation(make_trainer(tmp_path, train), data_args) is None
    trainer = make_trainer(tmp_path, train, knn_eval_steps=2, knn_k=5)
    with caplog.at_level("WARNING", logger="hfssl.evaluation.knn"):
        callback = add_knn_evaluation(trainer, data_args)
    assert not caplog.text  # k=5 < 64 memory images
    assert (len(callback.memory_dataset), len(callback.query_dataset), callback.k) == (64, 359, 5)
    assert callback in trainer.callback_handler.callbacks
    trainer.train()
    assert [entry["step"] for entry in trainer.state.log_history if "eval_knn/top1" in entry] == [2, 4]
    with pytest.raises(ValueError, match="knn_eval_steps=0 must be >= 1"):
        SSLTrainingArguments(output_dir=str(tmp_path), knn_eval_steps=0)
    with caplog.at_level("WARNING", logger="hfssl.evaluation.knn"):
        add_knn_evaluation(make_trainer(tmp_path, train, knn_eval_steps=2), data_args)  # k=200 >= 64 images
    assert "k=200 neighbours over 64 memory images" in caplog.text


def test_the_callback_measures_at_the_size_training_sees(digits, tmp_path):
    """A backbone whose data config says 160 px, trained on 16 px views: kNN resizes to 16 px by default."""
    memory, queries = digits
    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_name="test_resnet", **TINY_HEAD))
    args = SSLTrainingArguments(output_dir=str(tmp_path), report_to="none", save_strategy="no", disable_tqdm=True)
    collator = DataCollatorForMultiView.simclr(image_size=16, mean=MEAN, std=STD, seed=0)
    trainer = SimCLRTrainer(model=model, args=args, data_collator=collator, train_dataset=memory)
    callback = KNNEvaluationCallback(trainer, memory, queries, eval_steps=1, k=5, mean=MEAN, std=STD)
    options = {"image_size": 16, "mean": MEAN, "std": STD}
    expected = knn_accuracy(*dataset_features(model, memory, **options), *dataset_features(model, queries, **options), k=5)
    assert callback.compute_metrics()["eval_knn/top1"] == pytest.approx(expected)
    options["image_size"] = 160  # the backbone's data config: another score, so the check above tells them apart
    at_160 = knn_accuracy(*dataset_features(model, memory, **options), *dataset_features(model, queries, **options), k=5)
    assert at_160 != pytest.approx(expected)

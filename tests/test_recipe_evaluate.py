"""recipes/evaluate_ssl.py evaluates a Trainer checkpoint of an hfssl model, an exported backbone and a timm name, on
the data's test split, at the side the model trained at, writing beside the model folder, not into it."""

import json
import runpy
import sys

import pytest
import torch

from conftest import TINY_HEAD, TINY_VIT
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.evaluation.features import dataset_features
from hfssl.evaluation.knn import knn_accuracy
from hfssl.evaluation.linear_probe import linear_probe
from hfssl.export import save_backbone
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments

SMALL = ["--max_train_samples", "200", "--max_eval_samples", "60", "--tsne_points", "60", "--linear_probe_epochs", "5",
         "--k", "20"]


def run_recipe(monkeypatch, capsys, *arguments, check_accuracy=True):
    monkeypatch.setattr(sys, "argv", ["evaluate_ssl.py", *SMALL, *arguments])  # later flags win
    runpy.run_path("recipes/evaluate_ssl.py", run_name="__main__")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    knn, probe = (float(part.split("=")[1]) for part in line.split())
    # Far above chance on the 60 queries (measured: 0.55 and 0.57 for the tiny ViT, 0.35-0.47 and 0.40-0.53 for a
    # random resnet18 over 6 seeds), which a constant encoder cannot pass (it scores the largest class share, 8/60)
    # nor features unrelated to the labels (binomial(60, 0.1): P(>= 15 right) ~ 0.001).
    assert not check_accuracy or (knn > 0.25 and probe > 0.25)
    return knn, probe


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits):
    """A Trainer checkpoint (config, weights, trainer_state.json) of a tiny SimCLR ViT after 2 steps."""
    folder = tmp_path_factory.mktemp("simclr")
    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD))
    args = SSLTrainingArguments(output_dir=str(folder), max_steps=2, per_device_train_batch_size=8, report_to="none",
                                save_strategy="steps", save_steps=2, logging_steps=1, disable_tqdm=True, seed=0)
    trainer = SimCLRTrainer(model=model, args=args, data_collator=DataCollatorForMultiView.simclr(image_size=16, seed=0),
                            train_dataset=digits.select(range(16)))
    trainer.train()
    return folder / "checkpoint-2", model


def test_recipe_on_a_checkpoint_writes_results_and_pictures(checkpoint, digits_train, digits_test, monkeypatch, capsys):
    folder, model = checkpoint
    knn, probe = run_recipe(monkeypatch, capsys, "--model_name_or_path", str(folder))
    # the printed figures are those of the trained backbone on the first 200 train / 60 test digits (SMALL), recomputed
    train, test = (dataset_features(model.backbone, data.select(range(size)), image_size=16)
                   for data, size in ((digits_train, 200), (digits_test, 60)))  # fmt: skip
    assert knn == pytest.approx(knn_accuracy(*train, *test, k=20), abs=1e-4)
    assert probe == pytest.approx(linear_probe(*train, *test, epochs=5).accuracy, abs=1e-4)
    output = folder.parent / "checkpoint-2-eval"  # beside the model folder, which is left as it was
    assert not any((folder / name).exists() for name in ("eval_results.json", "embeddings_tsne.png", "training_curves.png"))
    results = json.loads((output / "eval_results.json").read_text())
    assert results["knn/top1"] == pytest.approx(knn, abs=1e-4) and results["image_size"] == 16
    assert results["train_samples"] == 200 and results["eval_samples"] == 60 and results["feature_dim"] == 32
    assert results["eval_split"] == "test" and results["model"] == str(folder)
    for picture in ("embeddings_tsne.png", "training_curves.png"):
        assert (output / picture).stat().st_size > 5000


def test_recipe_on_an_exported_backbone_matches_the_model(checkpoint, monkeypatch, capsys, tmp_path):
    folder, model = checkpoint
    export = save_backbone(model.to("cpu"), tmp_path / "export", image_size=16, ssl_model_subfolder=None)
    assert run_recipe(monkeypatch, capsys, "--model_name_or_path", str(folder))[0] == pytest.approx(
        run_recipe(monkeypatch, capsys, "--model_name_or_path", str(export))[0]
    )


def test_recipe_on_a_timm_name(monkeypatch, capsys, tmp_path):
    torch.manual_seed(0)  # the random resnet18's weights
    run_recipe(monkeypatch, capsys, "--model_name_or_path", "resnet18", "--pretrained", "false", "--image_size", "16",
               "--output_dir", str(tmp_path))
    assert (tmp_path / "eval_results.json").exists() and not (tmp_path / "training_curves.png").exists()


def test_a_model_trained_at_16_px_is_evaluated_at_16_px(digits, monkeypatch, capsys, tmp_path):
    """A timm backbone whose data config says 160 px, trained on 16 px views: the saved model records 16, and the
    recipe evaluates at 16 px unless --image_size says otherwise."""
    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_name="test_resnet", **TINY_HEAD))
    args = SSLTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=8,
                                report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = SimCLRTrainer(model=model, args=args, data_collator=DataCollatorForMultiView.simclr(image_size=16, seed=0),
                            train_dataset=digits.select(range(8)))
    trainer.train()
    trainer.save_model(str(tmp_path / "model"))
    run_recipe(monkeypatch, capsys, "--model_name_or_path", str(tmp_path / "model"), "--tsne_points", "0",
               check_accuracy=False)
    assert json.loads((tmp_path / "model-eval" / "eval_results.json").read_text())["image_size"] == 16


def test_an_image_folder_is_scored_on_its_test_split_and_a_large_k_is_warned_about(monkeypatch, capsys, tmp_path,
                                                                                   caplog):
    from PIL import Image

    from hfssl.data.images import load_digits_dataset

    for split, data in (("train", load_digits_dataset(16).select(range(40))),
                        ("test", load_digits_dataset(16, split="test").select(range(12)))):  # fmt: skip
        for index, example in enumerate(data):
            folder = tmp_path / "images" / split / str(example["label"])
            folder.mkdir(parents=True, exist_ok=True)
            example["image"].save(folder / f"{index}.png")
    torch.manual_seed(0)
    with caplog.at_level("WARNING"):
        run_recipe(monkeypatch, capsys, "--model_name_or_path", "resnet18", "--pretrained", "false", "--image_size",
                   "16", "--train_dir", str(tmp_path / "images"), "--k", "50", "--tsne_points", "0",
                   "--output_dir", str(tmp_path / "out"), check_accuracy=False)
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert (results["eval_split"], results["train_samples"], results["eval_samples"]) == ("test", 40, 12)
    assert "k=50 neighbours over 40 memory images" in caplog.text

"""recipes/pretrain_ssl.py runs every --method for a few steps on the built-in digits (in this process, tiny heads)
and saves a model that AutoModel loads, plus the exported encoder and its card."""

import importlib.util
import os
import sys

import pytest
import torch
from transformers import AutoModel

import hfssl.models  # noqa: F401
from hfssl.trainers.methods import METHODS

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "pretrain_ssl.py")
spec = importlib.util.spec_from_file_location("pretrain_ssl", RECIPE)
recipe = importlib.util.module_from_spec(spec)
sys.modules["pretrain_ssl"] = recipe  # Trainer pickles the arguments dataclass defined there
spec.loader.exec_module(recipe)

TINY_HEADS = {
    "simclr": "projection_hidden_dim=32,projection_dim=16",
    "moco": "projection_hidden_dim=32,projection_dim=16,queue_size=64",
    "byol": "projection_hidden_dim=32,projection_dim=16,predictor_hidden_dim=32",
    "simsiam": "projection_hidden_dim=32,projection_dim=16,predictor_hidden_dim=8",
    "barlow_twins": "projection_hidden_dim=32,projection_dim=32",
    "vicreg": "projection_hidden_dim=32,projection_dim=32",
    "dino": "out_dim=64,head_hidden_dim=32,head_bottleneck_dim=16",
    "swav": "projection_hidden_dim=32,projection_dim=16,num_prototypes=20",
}


def test_every_method_has_tiny_heads_here():
    assert set(METHODS) <= set(TINY_HEADS)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"simclr", "moco"}))  # those two: test_recipe_simclr.py
def test_recipe_trains_evaluates_and_exports(method, tmp_path, capsys):
    arguments = ["--method", method, "--config_overrides", TINY_HEADS[method], "--backbone_name", "resnet18",
                 "--output_dir", str(tmp_path), "--max_steps", "2", "--per_device_train_batch_size", "16",
                 "--image_size", "16", "--local_size", "8", "--num_local_crops", "2", "--max_train_samples", "64",
                 "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip
    evaluation = recipe.main(arguments)
    accuracy = evaluation["kNN top-1 (k=200, T=0.1)"]
    assert 0.0 <= accuracy <= 1.0 and f"knn_top1={accuracy:.4f}" in capsys.readouterr().out
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, METHODS[method].model_class)
    card = (tmp_path / "export" / "README.md").read_text()
    assert METHODS[method].name in card and f"{accuracy:.4f}"[:4] in card


def test_config_overrides_are_parsed_and_bad_input_is_named():
    assert recipe.parse_overrides("a=1,b=0.5,c=true,d=name,e=none") == {"a": 1, "b": 0.5, "c": True, "d": "name", "e": None}
    assert recipe.parse_overrides(None) == {}
    with pytest.raises(ValueError, match="item 'projection_dim' is not name=value"):
        recipe.parse_overrides("projection_dim")
    with pytest.raises(ValueError, match="--method 'moco_v9' is not supported; choose one of simclr, moco, byol"):
        recipe.main(["--method", "moco_v9", "--output_dir", "/tmp/unused"])


@pytest.mark.slow
def test_recipe_evaluates_and_exports_the_ema_teacher_on_request(tmp_path):
    from safetensors.torch import load_file

    arguments = ["--method", "byol", "--config_overrides", TINY_HEADS["byol"], "--backbone_name", "resnet18",
                 "--output_dir", str(tmp_path), "--max_steps", "2", "--per_device_train_batch_size", "16",
                 "--image_size", "16", "--max_train_samples", "64", "--report_to", "none", "--disable_tqdm", "true",
                 "--export_encoder", "teacher_backbone"]  # fmt: skip
    recipe.main(arguments)
    model = AutoModel.from_pretrained(tmp_path)
    exported = load_file(tmp_path / "export" / "model.safetensors")
    teacher, student = model.teacher_backbone.model.state_dict(), model.backbone.model.state_dict()
    assert exported.keys() == teacher.keys()
    assert all(torch.equal(exported[key], teacher[key]) for key in teacher)
    assert any(not torch.equal(teacher[key], student[key]) for key in teacher)  # the teacher, not the student
    assert "`teacher_backbone` (the EMA teacher's encoder)" in (tmp_path / "export" / "README.md").read_text()


def test_recipe_refuses_an_encoder_the_method_lacks_before_training(tmp_path):
    with pytest.raises(TypeError, match=r"encoder `teacher_backbone` from SimSiamModel.*encoders: \['backbone'\]"):
        recipe.main(["--method", "simsiam", "--config_overrides", TINY_HEADS["simsiam"], "--output_dir", str(tmp_path),
                     "--export_encoder", "teacher_backbone", "--report_to", "none"])
    assert not any(tmp_path.iterdir())


@pytest.fixture
def built(monkeypatch):
    """Run the recipe up to training: the trainer it would train, without training."""
    trainers = []
    monkeypatch.setattr(recipe, "train_evaluate_export", lambda trainer, *args, **kwargs: trainers.append(trainer) or {})
    return trainers


def test_dino_trains_with_dinos_arguments_the_others_without_clipping(built, tmp_path):
    from hfssl.trainers.dino import DINOTrainingArguments

    common = ["--output_dir", str(tmp_path), "--report_to", "none", "--max_train_samples", "64", "--image_size", "16"]
    recipe.main(["--method", "dino", "--config_overrides", TINY_HEADS["dino"], "--weight_decay_final", "0.3", *common])
    args = built[-1].args
    assert isinstance(args, DINOTrainingArguments) and args.max_steps == 60
    assert (args.learning_rate, args.weight_decay, args.weight_decay_final, args.max_grad_norm) == (5e-4, 0.04, 0.3, 3.0)
    assert built[-1].data_collator.views[0].scale == (0.4, 1.0)  # DINO's global crops by default
    recipe.main(["--method", "byol", "--config_overrides", TINY_HEADS["byol"], *common])
    args = built[-1].args
    assert not isinstance(args, DINOTrainingArguments) and args.max_grad_norm == 0.0
    assert built[-1].data_collator.views[0].scale == (0.08, 1.0)  # BYOL's preset
    recipe.main(["--method", "byol", "--config_overrides", TINY_HEADS["byol"], "--min_scale", "0.3", *common])
    assert built[-1].data_collator.views[0].scale == (0.3, 1.0)
    with pytest.raises(ValueError, match="weight_decay_final"):  # a DINO-only flag with another method
        recipe.main(["--method", "byol", "--weight_decay_final", "0.3", *common])


def test_recipe_file_and_unknown_config_fields(built, tmp_path):
    config = os.path.join(os.path.dirname(RECIPE), "configs", "byol_tiny.yaml")
    assert recipe.requested_method([config]) == "byol" and recipe.requested_method(["--method", "dino"]) == "dino"
    recipe.main([config])
    assert built[-1].model.config.projection_hidden_dim == 1024 and built[-1].args.learning_rate == 1.0
    with pytest.raises(ValueError, match=r"DINOConfig has no field\(s\) num_local_crops; its fields: .*out_dim"):
        recipe.main(["--method", "dino", "--config_overrides", "out_dim=64,num_local_crops=6", "--output_dir", str(tmp_path)])

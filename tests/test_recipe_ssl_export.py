"""Every shipped image YAML (recipes/configs/{simclr, moco_v2, ...}.yaml) ends, through recipes/pretrain_ssl.py, with
the encoder exported in its library's native format and a model card (issue 28 point 9): a YAML with
`small_image_stem: true` made the recipe skip both with only a logged warning."""

import os

import pytest
import yaml
from test_recipe_ssl import CONFIGS, PAPER_SETTINGS, TINY_HEADS, flags, recipe  # recipes/pretrain_ssl.py

from hfssl.export import native_export_problem, resolve_backbone

# Options that decide the encoder and so whether it can be exported natively: a tiny run never overrides them.
ENCODER_KEYS = {"backbone_name", "backbone_pretrained", "small_image_stem", "backbone_kwargs", "export_encoder"}
TINY_SIZES = flags(max_steps=1, per_device_train_batch_size=8, image_size=16, local_size=8, num_local_crops=2,
                   max_train_samples=32, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)


def read_config(name: str) -> dict:
    with open(os.path.join(CONFIGS, f"{name}.yaml")) as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def built(monkeypatch):
    """Run the recipe up to training: the trainer it would train, without training."""
    trainers = []
    monkeypatch.setattr(recipe, "train_evaluate_export",
                        lambda trainer, *args, **kwargs: trainers.append(trainer) or {})  # fmt: skip
    return trainers


@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_each_image_yaml_builds_an_encoder_that_exports_natively(name, built, tmp_path):
    values = read_config(name)
    assert not values.get("small_image_stem", False), f"{name}.yaml sets small_image_stem: no native export"
    recipe.main([os.path.join(CONFIGS, f"{name}.yaml"), "--output_dir", str(tmp_path), "--report_to", "none"])
    model = built[-1].model
    backbone, _ = resolve_backbone(model, values.get("export_encoder", "backbone"))
    assert native_export_problem(backbone) is None


def test_the_export_check_catches_a_small_image_stem(built, tmp_path):
    """The check above can fail: the setting that once made a shipped YAML skip the export."""
    recipe.main([os.path.join(CONFIGS, "byol.yaml"), "--small_image_stem", "true", "--output_dir", str(tmp_path),
                 "--report_to", "none"])  # fmt: skip
    assert "small_image_stem=True" in native_export_problem(built[-1].model.backbone)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_each_image_yaml_run_writes_the_encoder_and_its_card(name, tmp_path):
    """One step of the YAML at tiny sizes (heads, batch, images), its encoder options untouched."""
    values = read_config(name)
    method = values["method"]
    tiny = [*TINY_HEADS[method], *TINY_SIZES]
    assert not ENCODER_KEYS & {argument[2:] for argument in tiny if argument.startswith("--")}
    if method == "moco" and values.get("variant") == "v3":
        tiny += flags(predictor_hidden_dim=32)
    recipe.main([os.path.join(CONFIGS, f"{name}.yaml"), *tiny, "--output_dir", str(tmp_path)])
    export = tmp_path / "export"
    assert (export / "model.safetensors").is_file() and (export / "config.json").is_file()
    assert "kNN top-1" in (export / "README.md").read_text()

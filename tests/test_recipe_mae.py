"""recipes/pretrain_mae.py: configs parse; a few steps end to end on a tiny ViTMAE, then AutoModel loads the encoder."""

import os
import runpy
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoModel, HfArgumentParser, ViTMAEModel


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine they oversubscribe it
    (a resnet18 step went from 0.1 s to 4 s): use one thread in this module, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "pretrain_mae.py")
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "recipes", "configs")


def recipe_module() -> dict:
    return runpy.run_path(RECIPE, run_name="pretrain_mae")


@pytest.mark.parametrize("name", ["mae_tiny.yaml", "mae_vit_base.yaml"])
def test_yaml_configs_parse(name):
    recipe = recipe_module()
    parser = HfArgumentParser((recipe["ModelArguments"], recipe["DataArguments"], recipe["MAETrainingArguments"]))
    model_args, _, training_args = parser.parse_yaml_file(os.path.join(CONFIGS, name))
    assert model_args.mask_ratio == 0.75 and model_args.norm_pix_loss and training_args.remove_unused_columns is False
    assert training_args.adam_beta2 == 0.95 and training_args.weight_decay == 0.05


@pytest.mark.slow
def test_recipe_end_to_end_then_automodel_gives_deterministic_unmasked_features(tmp_path, monkeypatch):
    output_dir = str(tmp_path / "mae")
    argv = [RECIPE, "--output_dir", output_dir, "--max_steps", "3", "--max_train_samples", "48",
            "--per_device_train_batch_size", "16", "--image_size", "32", "--patch_size", "8", "--hidden_size", "32",
            "--num_hidden_layers", "1", "--num_attention_heads", "2", "--decoder_hidden_size", "32",
            "--decoder_num_hidden_layers", "1", "--num_reconstructions", "4", "--use_cpu", "true"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(RECIPE, run_name="__main__")

    assert os.path.exists(os.path.join(output_dir, "pretraining", "model.safetensors"))
    png = Image.open(os.path.join(output_dir, "reconstructions.png"))
    assert png.size == (4 * 32, 4 * 32)  # 4 images side by side, 4 rows
    encoder = AutoModel.from_pretrained(output_dir).eval()
    assert isinstance(encoder, ViTMAEModel) and encoder.config.mask_ratio == 0.0
    assert ViTMAEModel.from_pretrained(output_dir).config.mask_ratio == 0.0
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        first, second = encoder(pixel_values=pixels), encoder(pixel_values=pixels)
    assert first.last_hidden_state.shape == (3, 1 + 16, 32) and first.mask.sum() == 0  # every patch seen
    torch.testing.assert_close(first.last_hidden_state[:, 0], second.last_hidden_state[:, 0])  # CLS
    torch.testing.assert_close(first.last_hidden_state.mean(1), second.last_hidden_state.mean(1))
    restore = lambda out: torch.gather(out.last_hidden_state[:, 1:], 1, out.ids_restore.unsqueeze(-1).expand(-1, -1, 32))  # noqa: E731
    torch.testing.assert_close(restore(first), restore(second))  # patch tokens in image order
    with torch.no_grad():
        ordered = encoder(pixel_values=pixels, noise=torch.arange(16.0).expand(3, 16))  # the docstring's recipe to keep order
    torch.testing.assert_close(ordered.last_hidden_state[:, 1:], restore(first))

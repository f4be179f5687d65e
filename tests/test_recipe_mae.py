"""recipes/pretrain_mae.py: configs parse; the encoder export is a deterministic ViT equal to the MAE encoder; a few
steps end to end on a tiny ViTMAE, then AutoModel loads the encoder."""

import copy
import os
import runpy
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoModel, HfArgumentParser, ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel, ViTModel


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


def test_encoder_export_is_a_deterministic_vit_equal_to_the_mae_encoder_in_patch_order(tmp_path):
    config = ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                          decoder_num_attention_heads=2, decoder_intermediate_size=64, mask_ratio=0.75)
    model = ViTMAEForPreTraining(config).eval()
    encoder = recipe_module()["encoder_as_vit"](model).eval()
    assert isinstance(encoder, ViTModel) and encoder.pooler is None and encoder.config.hidden_size == 32
    # every weight copied, the fixed sin-cos position embeddings included
    weights = model.vit.state_dict()
    assert all(torch.equal(value, weights[name]) for name, value in encoder.state_dict().items())
    reference_config = copy.deepcopy(config)
    reference_config.mask_ratio = 0.0
    reference = ViTMAEModel(reference_config).eval()
    reference.load_state_dict(weights)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        first, second = encoder(pixel_values=pixels), encoder(pixel_values=pixels)
        ordered = reference(pixel_values=pixels, noise=torch.arange(16.0).expand(3, 16))  # identity order
        shuffled = reference(pixel_values=pixels)  # ViTMAE's own random token order
    assert torch.equal(first.last_hidden_state, second.last_hidden_state)
    assert first.last_hidden_state.shape == (3, 1 + 16, 32)
    torch.testing.assert_close(first.last_hidden_state, ordered.last_hidden_state)
    assert not torch.allclose(shuffled.last_hidden_state[:, 1:], ordered.last_hidden_state[:, 1:])  # why ViT, not ViTMAE
    encoder.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, add_pooling_layer=False)
    assert isinstance(loaded, ViTModel)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels).last_hidden_state, first.last_hidden_state)


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
    encoder = AutoModel.from_pretrained(output_dir, add_pooling_layer=False)
    assert isinstance(encoder, ViTModel) and encoder.pooler is None
    with_pooler = AutoModel.from_pretrained(output_dir)  # AutoModel's default adds a freshly initialised pooler
    assert isinstance(with_pooler, ViTModel)
    pixels = torch.randn(3, 3, 32, 32)
    mae = ViTMAEModel.from_pretrained(os.path.join(output_dir, "pretraining"), mask_ratio=0.0)
    with torch.no_grad():
        first, second = encoder(pixel_values=pixels), encoder(pixel_values=pixels)
        pooled = with_pooler(pixel_values=pixels)
        ordered = mae(pixel_values=pixels, noise=torch.arange(16.0).expand(3, 16))  # the MAE encoder, patches in order
    assert first.last_hidden_state.shape == (3, 1 + 16, 32)  # every patch, in image order
    assert torch.equal(first.last_hidden_state, second.last_hidden_state)
    torch.testing.assert_close(pooled.last_hidden_state, first.last_hidden_state)
    torch.testing.assert_close(first.last_hidden_state, ordered.last_hidden_state)

"""recipes/pretrain_mae.py: configs parse; a few steps end to end on a tiny ViTMAE, then AutoModel and the
image-feature-extraction pipeline load the encoder (hfssl.export.mae_encoder_as_vit, tested in test_export.py)."""

import os
import runpy
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, HfArgumentParser, ViTMAEModel, ViTModel, pipeline


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
    model_args, data_args, training_args = parser.parse_yaml_file(os.path.join(CONFIGS, name))
    assert model_args.mask_ratio == 0.75 and model_args.norm_pix_loss and training_args.remove_unused_columns is False
    assert data_args.min_scale == 0.2 and data_args.image_size == (32 if name == "mae_tiny.yaml" else 224)
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
    assert png.size[0] > png.size[1] > 0  # 4 images side by side, 4 rows, and the rows' names
    encoder, info = AutoModel.from_pretrained(output_dir, output_loading_info=True)
    assert isinstance(encoder, ViTModel) and not any(info[key] for key in ("missing_keys", "unexpected_keys"))
    pixels = torch.randn(3, 3, 32, 32)
    mae = ViTMAEModel.from_pretrained(os.path.join(output_dir, "pretraining"), mask_ratio=0.0)
    with torch.no_grad():
        first, second = encoder(pixel_values=pixels), encoder(pixel_values=pixels)
        ordered = mae(pixel_values=pixels, noise=torch.arange(16.0).expand(3, 16))  # the MAE encoder, patches in order
    assert first.last_hidden_state.shape == (3, 1 + 16, 32)  # every patch, in image order
    assert torch.equal(first.last_hidden_state, second.last_hidden_state)
    torch.testing.assert_close(first.last_hidden_state, ordered.last_hidden_state)
    torch.testing.assert_close(first.pooler_output, first.last_hidden_state[:, 0], rtol=0, atol=1e-6)  # [CLS]
    image = Image.fromarray(torch.randint(0, 256, (32, 32, 3), generator=torch.Generator().manual_seed(0),
                                          dtype=torch.uint8).numpy())
    pooled = pipeline("image-feature-extraction", model=output_dir, pool=True)(image)  # the [CLS] features
    with torch.no_grad():
        inputs = AutoImageProcessor.from_pretrained(output_dir)(images=image, return_tensors="pt")
        cls = encoder(**inputs).last_hidden_state[:, 0]
    torch.testing.assert_close(torch.tensor(pooled), cls, rtol=1e-5, atol=1e-5)

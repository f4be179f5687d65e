"""Backbone: timm and transformers models as (B, C, H, W) -> (B, D) feature extractors."""

import copy

import pytest
import timm
import torch

from conftest import tiny_vit_config
from hfssl.models.backbone import Backbone, grouped_batch_norm, resolve_library


def test_timm_backbone_features_dim_and_data_config():
    backbone = Backbone("resnet18", pretrained=False)
    features = backbone(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 512) and backbone.feature_dim == 512
    assert backbone.library == "timm"
    assert backbone.data_config["input_size"] == (3, 224, 224)
    assert backbone.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))


def test_small_image_stem_keeps_full_resolution():
    backbone = Backbone("resnet18", small_image_stem=True, in_chans=1)
    conv = backbone.model.conv1
    assert (conv.kernel_size, conv.stride, conv.in_channels) == ((3, 3), (1, 1), 1)
    assert isinstance(backbone.model.maxpool, torch.nn.Identity)
    # the first stage sees the 16x16 input at full resolution
    stage = backbone.model.layer1(backbone.model.act1(backbone.model.bn1(conv(torch.randn(1, 1, 16, 16)))))
    assert stage.shape[-1] == 16
    assert backbone(torch.randn(2, 1, 16, 16)).shape == (2, 512)


@pytest.mark.parametrize("name", ["test_resnet", "resnet10t"])
def test_small_image_stem_replaces_a_deep_stem(name):
    # timm's deep-stem ResNets (three 3x3 convolutions, the first strided): one 3x3 stride-1 convolution from the
    # stem's input to its output channels, so bn1 and the stages fit unchanged
    stem = timm.create_model(name, num_classes=0, in_chans=1).conv1
    backbone = Backbone(name, small_image_stem=True, in_chans=1)
    conv = backbone.model.conv1
    assert isinstance(conv, torch.nn.Conv2d) and isinstance(backbone.model.maxpool, torch.nn.Identity)
    assert (conv.kernel_size, conv.stride, conv.in_channels, conv.out_channels) == ((3, 3), (1, 1), 1, stem[-1].out_channels)
    stage = backbone.model.layer1(backbone.model.act1(backbone.model.bn1(conv(torch.randn(2, 1, 16, 16)))))
    assert stage.shape[-1] == 16
    assert backbone(torch.randn(2, 1, 16, 16)).shape == (2, backbone.feature_dim)


def test_small_image_stem_rejects_models_without_a_resnet_stem():
    with pytest.raises(ValueError, match="needs a ResNet-style model with `conv1`"):
        Backbone("vit_tiny_patch16_224", small_image_stem=True, model_kwargs={"img_size": 32})


@pytest.mark.parametrize("pooling", ["auto", "cls", "mean", "pooler"])
def test_transformers_backbone_from_config_and_pooling(pooling):
    torch.manual_seed(0)
    backbone = Backbone(config=tiny_vit_config(image_size=32), pooling=pooling)
    pixel_values = torch.randn(2, 3, 32, 32)
    features = backbone(pixel_values)
    assert features.shape == (2, 32) and backbone.feature_dim == 32
    hidden = backbone.model(pixel_values=pixel_values).last_hidden_state
    if pooling in ("auto", "cls"):
        torch.testing.assert_close(features, hidden[:, 0])
        assert not any(p.requires_grad for p in backbone.model.pooler.parameters())
    elif pooling == "mean":
        torch.testing.assert_close(features, hidden.mean(dim=1))
    assert backbone.data_config["input_size"] == (3, 32, 32)


def test_transformers_backbone_from_a_config_dict_and_a_local_folder(tmp_path):
    config = tiny_vit_config(image_size=32)
    assert Backbone(config=config.to_dict()).feature_dim == 32
    Backbone(config=config).model.save_pretrained(tmp_path)
    assert resolve_library(str(tmp_path)) == "transformers"
    loaded = Backbone(str(tmp_path), pretrained=True)
    assert loaded.library == "transformers" and loaded(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_a_transformers_folder_brings_its_processors_normalisation(tmp_path):
    import json

    Backbone(config=tiny_vit_config(image_size=32)).model.save_pretrained(tmp_path)
    assert Backbone(str(tmp_path), pretrained=True).data_config["mean"] == (0.485, 0.456, 0.406)  # none: ImageNet's
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    for pretrained in (True, False):
        backbone = Backbone(str(tmp_path), pretrained=pretrained)
        assert backbone.data_config["mean"] == (0.5, 0.5, 0.5) and backbone.data_config["std"] == (0.5, 0.5, 0.5)


def test_auto_pooling_averages_token_models_without_a_cls_token():
    from transformers import SwinConfig

    torch.manual_seed(0)
    config = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=4)
    backbone = Backbone(config=config)
    pixel_values = torch.randn(2, 3, 32, 32)
    outputs = backbone.model(pixel_values=pixel_values)
    assert backbone.pooling == "mean"  # Swin has no CLS token: the first token is one corner window
    torch.testing.assert_close(backbone(pixel_values), outputs.last_hidden_state.mean(dim=1))
    torch.testing.assert_close(backbone(pixel_values), outputs.pooler_output)  # Swin's own average pooling


def test_library_resolution_and_errors():
    assert resolve_library("resnet18") == "timm"
    assert resolve_library("hf-hub:timm/resnet18.a1_in1k") == "timm"
    assert resolve_library("google/vit-base-patch16-224") == "transformers"
    with pytest.raises(ValueError, match="pooling='max' is not supported"):
        Backbone("resnet18", pooling="max")
    with pytest.raises(ValueError, match="needs a model `name`"):
        Backbone()
    with pytest.raises(ValueError, match="small_image_stem=True is only available for timm"):
        Backbone(config=tiny_vit_config(image_size=32), small_image_stem=True)


def test_backbone_loads_a_timm_export_folder(tmp_path):
    """A folder in timm's layout (what hfssl.export.save_backbone writes) is read through timm's local-dir:."""
    import torch

    from hfssl import Backbone, save_backbone
    from hfssl.models.backbone import resolve_library

    torch.manual_seed(0)
    trained = Backbone("resnet18").eval()
    folder = save_backbone(trained, tmp_path / "export", image_size=32)
    assert resolve_library(str(folder)) == "timm"
    reloaded = Backbone(str(folder)).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(trained(images), reloaded(images), atol=1e-6)


def test_grouped_batch_norm_equals_running_each_group_on_its_own():
    torch.manual_seed(0)
    backbone = Backbone("test_resnet").train()
    reference = copy.deepcopy(backbone)
    images = torch.randn(12, 3, 32, 32)
    with grouped_batch_norm(backbone, 3):
        features = backbone(images)
    expected = torch.cat([reference(group) for group in images.chunk(3)])  # three separate batches of 4
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-4)
    for (name, buffer), other in zip(backbone.named_buffers(), reference.buffers()):
        torch.testing.assert_close(buffer, other, msg=name)  # running statistics updated once per group, in order
    assert (features - reference(images)).abs().max() > 1e-3  # whole-batch statistics differ
    assert not any("forward" in vars(layer) for layer in backbone.modules())  # restored after the context
    features.sum().backward()  # backward needs no context
    assert all(parameter.grad is not None for parameter in backbone.parameters())


def test_grouped_batch_norm_keeps_the_activation_of_timm_batchnormact():
    torch.manual_seed(0)
    layer = timm.layers.BatchNormAct2d(4, act_layer=torch.nn.ReLU).train()
    inputs = torch.randn(6, 4, 3, 3)
    with grouped_batch_norm(layer, 2):
        outputs = layer(inputs)
    reference = timm.layers.BatchNormAct2d(4, act_layer=torch.nn.ReLU).train()
    torch.testing.assert_close(outputs, torch.cat([reference(inputs[:3]), reference(inputs[3:])]))
    assert (outputs >= 0).all()
    with grouped_batch_norm(layer, 1):  # one group: nothing patched
        assert "forward" not in vars(layer)

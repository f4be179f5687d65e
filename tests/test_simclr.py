"""SimCLRModel: loss wiring, Auto-class round trip, learnable temperature."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

from conftest import TINY_HEAD, TINY_VIT
import hfssl.models  # noqa: F401  (registers the Auto classes)
from hfssl.losses import nt_xent_loss
from hfssl.models.simclr import SimCLRConfig, SimCLRModel


def tiny_config(**overrides):
    return SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD, **overrides)


def views(batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=generator) for _ in range(2)]


def test_forward_is_nt_xent_of_the_projections():
    torch.manual_seed(0)
    model = SimCLRModel(tiny_config(temperature=0.3)).eval()
    pixel_values = views()
    output = model(pixel_values=pixel_values)
    z = model.projector(model.backbone(torch.cat(pixel_values)))
    torch.testing.assert_close(output.loss, nt_xent_loss(z[:4], z[4:], 0.3))
    assert output.embeddings.shape == (4, 8)
    assert set(output.metrics) == {"contrastive/temperature", "contrastive/positive_cosine"}


def test_round_trip_through_auto_classes(tmp_path):
    torch.manual_seed(0)
    model = SimCLRModel(tiny_config(learnable_temperature=True, temperature=0.2))
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, SimCLRConfig) and config.backbone_library == "transformers"
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, SimCLRModel)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(pixel_values=views()).loss, model(pixel_values=views()).loss)


def test_learnable_temperature_is_trained():
    model = SimCLRModel(tiny_config(learnable_temperature=True, temperature=0.2))
    output = model(pixel_values=views())
    output.loss.backward()
    assert model.temperature.log_temperature.grad is not None
    assert output.metrics["contrastive/temperature"].item() == pytest.approx(0.2, rel=1e-5)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="temperature=0 must be > 0"):
        SimCLRConfig(temperature=0)
    with pytest.raises(ValueError, match="negative_sampling='x' is not supported"):
        SimCLRConfig(negative_sampling="x")
    model = SimCLRModel(tiny_config())
    with pytest.raises(ValueError, match="expects pixel_values as a list of 2 views.*received list of length 4"):
        model(pixel_values=views() + views())
    with pytest.raises(ValueError, match="received a tensor of shape \\(4, 3, 16, 16\\)"):
        model(pixel_values=views()[0])


def test_projection_head_ends_with_the_reference_batch_norm():
    """SimCLR's reference ProjectionHead (simclr/tf2/model.py) and lightly's SimCLRProjectionHead put a batch norm
    after the last, bias-free linear layer; the paper's text (a biased last layer, nothing after) stays an option."""
    layers = list(SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD)).projector.layers)
    assert [type(layer).__name__ for layer in layers] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert layers[0].bias is None and layers[3].bias is None and layers[4].affine
    config = SimCLRConfig(backbone_model_config=TINY_VIT, projection_last_batch_norm=False, **TINY_HEAD)
    layers = list(SimCLRModel(config).projector.layers)
    assert type(layers[-1]).__name__ == "Linear" and layers[-1].bias is not None

"""Projection / prediction heads as the SimCLR and MoCo papers define them."""

import pytest
import torch
from torch import nn

from hfssl.models.heads import MLPHead


def layer_types(head):
    return [type(layer).__name__ for layer in head.layers]


def test_simclr_head_is_linear_bn_relu_linear_bn():
    head = MLPHead.simclr(512)  # the reference code's batch norm after the last, bias-free layer
    assert layer_types(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert head.layers[0].out_features == 2048 and head.layers[-2].out_features == 128 and head.layers[-2].bias is None
    assert layer_types(MLPHead.simclr(512, last_batch_norm=False)) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head(torch.randn(4, 512)).shape == (4, 128)


def test_moco_v2_head_has_no_batch_norm():
    head = MLPHead.moco_v2(512)
    assert layer_types(head) == ["Linear", "ReLU", "Linear"]
    assert head.layers[0].bias is not None


def test_moco_v3_projector_and_predictor():
    projector = MLPHead.moco_v3_projector(512)
    assert layer_types(projector) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert all(layer.bias is None for layer in projector.layers if isinstance(layer, nn.Linear))
    assert projector.layers[-1].affine is False and projector.layers[-1].num_features == 256
    predictor = MLPHead.moco_v3_predictor()
    assert layer_types(predictor) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert predictor.layers[0].in_features == 256 and predictor.layers[0].out_features == 4096


def test_invalid_depth_is_rejected():
    with pytest.raises(ValueError, match="num_layers >= 1, got 0"):
        MLPHead(8, 8, 8, num_layers=0)


def test_byol_and_simsiam_heads_follow_their_papers():
    projector, predictor = MLPHead.byol_projector(512), MLPHead.byol_predictor()
    assert layer_types(projector) == layer_types(predictor) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert (projector.layers[0].out_features, projector.output_dim) == (4096, 256)
    assert (predictor.layers[0].in_features, predictor.layers[0].out_features) == (256, 4096)
    projector, predictor = MLPHead.simsiam_projector(512), MLPHead.simsiam_predictor()
    assert layer_types(projector) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert all(layer.bias is None for layer in projector.layers if isinstance(layer, nn.Linear))
    assert projector.output_dim == 2048 and predictor.layers[0].out_features == 512 and predictor.output_dim == 2048


def test_the_models_train_the_public_heads():
    from conftest import TINY_HEAD, TINY_VIT
    from hfssl import BYOLConfig, BYOLModel, DINOHead, SimSiamConfig, SimSiamModel

    def shapes(module):
        return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}

    byol = BYOLModel(BYOLConfig(backbone_model_config=TINY_VIT, **TINY_HEAD, predictor_hidden_dim=16))
    dim, hidden, out = byol.backbone.feature_dim, TINY_HEAD["projection_hidden_dim"], TINY_HEAD["projection_dim"]
    assert shapes(byol.projector) == shapes(MLPHead.byol_projector(dim, hidden, out))
    assert shapes(byol.predictor) == shapes(MLPHead.byol_predictor(out, 16, out))
    simsiam = SimSiamModel(SimSiamConfig(backbone_model_config=TINY_VIT, **TINY_HEAD, predictor_hidden_dim=4))
    layers = simsiam.config.projection_layers
    assert shapes(simsiam.projector) == shapes(MLPHead.simsiam_projector(dim, hidden, out, layers))
    assert shapes(simsiam.predictor) == shapes(MLPHead.simsiam_predictor(out, 4, out))
    assert DINOHead(8, output_dim=32, hidden_dim=16, bottleneck_dim=4)(torch.randn(2, 8)).shape == (2, 32)

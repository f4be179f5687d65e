"""Projection / prediction heads as the SimCLR and MoCo papers define them."""

import pytest
import torch
from torch import nn

from hfssl.models.heads import MLPHead


def layer_types(head):
    return [type(layer).__name__ for layer in head.layers]


def test_simclr_head_is_linear_bn_relu_linear():
    head = MLPHead.simclr(512)
    assert layer_types(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head.layers[0].out_features == 2048 and head.layers[-1].out_features == 128
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

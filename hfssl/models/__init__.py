"""SSL method models (`PreTrainedModel` + config, registered with the Auto classes at import), backbones, heads."""

from transformers import AutoConfig, AutoModel

from hfssl.models.backbone import Backbone, SSLBackboneConfig
from hfssl.models.barlow_twins import BarlowTwinsConfig, BarlowTwinsModel
from hfssl.models.byol import BYOLConfig, BYOLModel
from hfssl.models.clip import DualEncoderConfig, DualEncoderModel
from hfssl.models.dino import DINOConfig, DINOHead, DINOModel
from hfssl.models.heads import MLPHead
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.models.simsiam import SimSiamConfig, SimSiamModel
from hfssl.models.swav import SwAVConfig, SwAVModel
from hfssl.models.vicreg import VICRegConfig, VICRegModel

_METHODS = (
    (SimCLRConfig, SimCLRModel),
    (MoCoConfig, MoCoModel),
    (BYOLConfig, BYOLModel),
    (SimSiamConfig, SimSiamModel),
    (BarlowTwinsConfig, BarlowTwinsModel),
    (VICRegConfig, VICRegModel),
    (DINOConfig, DINOModel),
    (SwAVConfig, SwAVModel),
    (DualEncoderConfig, DualEncoderModel),
)
for _config, _model in _METHODS:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)

__all__ = [
    "BYOLConfig",
    "BYOLModel",
    "Backbone",
    "BarlowTwinsConfig",
    "BarlowTwinsModel",
    "DINOConfig",
    "DINOHead",
    "DINOModel",
    "DualEncoderConfig",
    "DualEncoderModel",
    "MLPHead",
    "MoCoConfig",
    "MoCoModel",
    "SSLBackboneConfig",
    "SSLModelOutput",
    "SimCLRConfig",
    "SimCLRModel",
    "SimSiamConfig",
    "SimSiamModel",
    "SwAVConfig",
    "SwAVModel",
    "VICRegConfig",
    "VICRegModel",
]

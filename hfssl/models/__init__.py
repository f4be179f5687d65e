"""SSL method models (`PreTrainedModel` + config; each file registers its model with the Auto classes), backbones,
heads."""

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

__all__ = [
    "BYOLConfig", "BYOLModel", "Backbone", "BarlowTwinsConfig", "BarlowTwinsModel", "DINOConfig", "DINOHead",
    "DINOModel", "DualEncoderConfig", "DualEncoderModel", "MLPHead", "MoCoConfig", "MoCoModel", "SSLBackboneConfig",
    "SSLModelOutput", "SimCLRConfig", "SimCLRModel", "SimSiamConfig", "SimSiamModel", "SwAVConfig", "SwAVModel",
    "VICRegConfig", "VICRegModel",
]  # fmt: skip

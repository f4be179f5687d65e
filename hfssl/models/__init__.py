"""SSL method models (`PreTrainedModel` + config, registered with the Auto classes at import), backbones, heads."""

from transformers import AutoConfig, AutoModel

from hfssl.models.backbone import Backbone, SSLBackboneConfig
from hfssl.models.heads import MLPHead
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.simclr import SimCLRConfig, SimCLRModel

for _config, _model in ((SimCLRConfig, SimCLRModel), (MoCoConfig, MoCoModel)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)

__all__ = [
    "Backbone",
    "MLPHead",
    "MoCoConfig",
    "MoCoModel",
    "SSLBackboneConfig",
    "SSLModelOutput",
    "SimCLRConfig",
    "SimCLRModel",
]

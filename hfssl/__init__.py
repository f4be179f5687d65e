"""hfssl: self-supervised learning for the Hugging Face ecosystem."""

from hfssl.collators.mlm import DataCollatorForMaskedLM
from hfssl.distributed import gather_no_grad, gather_with_grad
from hfssl.evaluation.features import extract_features, knn_evaluate
from hfssl.evaluation.knn import knn_accuracy, knn_predict
from hfssl.losses import LearnableTemperature, contrastive_loss_from_logits, info_nce_loss, nt_xent_loss
from hfssl.models import (
    Backbone,
    MLPHead,
    MoCoConfig,
    MoCoModel,
    SimCLRConfig,
    SimCLRModel,
    SSLBackboneConfig,
    SSLModelOutput,
)
from hfssl.models.base import SSLPreTrainedModel
from hfssl.optim import LARS
from hfssl.trainers import (
    MoCoTrainer,
    SimCLRTrainer,
    SSLStateUpdateCallback,
    SSLTrainer,
    SSLTrainingArguments,
    cosine_schedule,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # collators
    "DataCollatorForMaskedLM",
    # models and backbones
    "Backbone",
    "MLPHead",
    "MoCoConfig",
    "MoCoModel",
    "SSLBackboneConfig",
    "SSLModelOutput",
    "SSLPreTrainedModel",
    "SimCLRConfig",
    "SimCLRModel",
    # losses
    "LearnableTemperature",
    "contrastive_loss_from_logits",
    "info_nce_loss",
    "nt_xent_loss",
    # training
    "LARS",
    "MoCoTrainer",
    "SSLStateUpdateCallback",
    "SSLTrainer",
    "SSLTrainingArguments",
    "SimCLRTrainer",
    "cosine_schedule",
    # distributed and evaluation
    "extract_features",
    "gather_no_grad",
    "gather_with_grad",
    "knn_accuracy",
    "knn_evaluate",
    "knn_predict",
]

"""hfssl: self-supervised learning for the Hugging Face ecosystem."""

from hfssl.augmentations.text import (
    BackTranslation,
    EasyDataAugmentation,
    Seq2SeqTranslator,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from hfssl.augmentations.normalization import normalization_from
from hfssl.augmentations.presets import ViewAugmentation
from hfssl.collators.masked_image import DataCollatorForMaskedImageModeling
from hfssl.collators.mlm import DataCollatorForMaskedLM
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.collators.pretext import DataCollatorForColorization, DataCollatorForJigsaw, DataCollatorForRotation
from hfssl.collators.sentence_pairs import DataCollatorForSentencePairs
from hfssl.collators.skip_gram import DataCollatorForSkipGram, count_token_ids
from hfssl.collators.span_corruption import DataCollatorForSpanCorruption, compute_input_and_target_lengths
from hfssl.data.images import load_image_dataset
from hfssl.data.tokenizer_training import (
    train_byte_level_bpe_tokenizer,
    train_unigram_tokenizer,
    train_word_level_tokenizer,
)
from hfssl.distributed import (
    average_across_processes,
    average_gradients,
    convert_sync_batchnorm,
    gather_no_grad,
    gather_with_grad,
)
from hfssl.models.teacher import MomentumTeacher, check_teacher_sharding
from hfssl.evaluation.callbacks import KNNEvaluationCallback
from hfssl.evaluation.features import dataset_features, extract_features, feature_extractor, knn_evaluate, load_encoder
from hfssl.evaluation.fine_tune import (
    BackboneForImageClassification,
    DataCollatorForImageClassification,
    classification_accuracy,
    fine_tune,
    label_fraction_subset,
)
from hfssl.evaluation.linear_probe import LinearProbeResult, linear_probe
from hfssl.evaluation.metrics import TopKAccuracy
from hfssl.evaluation.plots import plot_embeddings, plot_training_curves
from hfssl.evaluation.knn import knn_accuracy, knn_predict
from hfssl.export import native_export_problem, push_backbone_to_hub, save_backbone, save_towers
from hfssl.hub import push_folder_to_hub, write_card_and_push, write_model_card, write_ssl_model_card
from hfssl.losses.grad_cache import cached_gradient_backward
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
from hfssl.models.pretext_heads import ColorizationHead, JigsawHead, RotationPredictionHead
from hfssl.models.simcse import SimCSEConfig, SimCSEModel
from hfssl.models.word2vec import Word2VecConfig, Word2VecModel
from hfssl.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from hfssl.losses.byol import byol_loss, simsiam_loss
from hfssl.losses.vicreg import VICRegLoss, vicreg_loss
from hfssl.models.barlow_twins import BarlowTwinsConfig, BarlowTwinsModel
from hfssl.models.byol import BYOLConfig, BYOLModel
from hfssl.models.simsiam import SimSiamConfig, SimSiamModel
from hfssl.models.vicreg import VICRegConfig, VICRegModel
from hfssl.collators.image_text import DataCollatorForImageText
from hfssl.evaluation.zero_shot import (
    encode_images,
    encode_texts,
    image_text_retrieval,
    zero_shot_classification,
    zero_shot_classifier,
)
from hfssl.losses.clip import clip_loss, siglip_loss
from hfssl.models.clip import DualEncoderConfig, DualEncoderModel
from hfssl.trainers.clip import DualEncoderTrainer
from hfssl.losses.dino import (
    dino_loss,
    teacher_batch_center,
    teacher_probabilities,
    teacher_temperature_schedule,
    update_center,
)
from hfssl.losses.swav import sinkhorn_knopp, swav_loss
from hfssl.models.dino import DINOConfig, DINOHead, DINOModel
from hfssl.models.swav import SwAVConfig, SwAVModel
from hfssl.trainers.callbacks import CancelGradientsCallback, WeightDecayScheduleCallback
from hfssl.trainers.dino import DINOTrainer, DINOTrainingArguments
from hfssl.trainers.swav import SwAVTrainer, swav_multi_crop_collator
from hfssl.optim import LARS
from hfssl.trainers import (
    BarlowTwinsTrainer,
    BYOLTrainer,
    CollapseGuardCallback,
    MoCoTrainer,
    SimCLRTrainer,
    SimSiamTrainer,
    SSLStateUpdateCallback,
    SSLTrainer,
    SSLTrainingArguments,
    cosine_schedule,
    effective_rank,
    VICRegTrainer,
)
from hfssl.trainers.checkpoints import last_complete_checkpoint
from hfssl.trainers.safe_trainer import NonFiniteError, SafeTrainer

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # collators
    "DataCollatorForImageText",
    "DataCollatorForColorization",
    "DataCollatorForJigsaw",
    "DataCollatorForMaskedImageModeling",
    "DataCollatorForMaskedLM",
    "DataCollatorForMultiView",
    "DataCollatorForRotation",
    "ViewAugmentation",
    "load_image_dataset",
    "normalization_from",
    "DataCollatorForSentencePairs",
    "DataCollatorForSkipGram",
    "DataCollatorForSpanCorruption",
    "compute_input_and_target_lengths",
    "count_token_ids",
    # text augmentation and tokenizers
    "BackTranslation",
    "EasyDataAugmentation",
    "Seq2SeqTranslator",
    "random_deletion",
    "random_insertion",
    "random_swap",
    "synonym_replacement",
    "train_byte_level_bpe_tokenizer",
    "train_unigram_tokenizer",
    "train_word_level_tokenizer",
    # models and backbones
    "DINOConfig",
    "DINOHead",
    "DINOModel",
    "SwAVConfig",
    "SwAVModel",
    "DualEncoderConfig",
    "DualEncoderModel",
    "BYOLConfig",
    "BYOLModel",
    "BarlowTwinsConfig",
    "BarlowTwinsModel",
    "SimSiamConfig",
    "SimSiamModel",
    "VICRegConfig",
    "VICRegModel",
    "Backbone",
    "MLPHead",
    "MoCoConfig",
    "MoCoModel",
    "SSLBackboneConfig",
    "SSLModelOutput",
    "SSLPreTrainedModel",
    "ColorizationHead",
    "JigsawHead",
    "RotationPredictionHead",
    "SimCLRConfig",
    "SimCLRModel",
    "SimCSEConfig",
    "SimCSEModel",
    "Word2VecConfig",
    "Word2VecModel",
    # losses
    "dino_loss",
    "sinkhorn_knopp",
    "swav_loss",
    "teacher_batch_center",
    "teacher_probabilities",
    "teacher_temperature_schedule",
    "update_center",
    "clip_loss",
    "siglip_loss",
    "BarlowTwinsLoss",
    "VICRegLoss",
    "barlow_twins_loss",
    "byol_loss",
    "simsiam_loss",
    "vicreg_loss",
    "LearnableTemperature",
    "cached_gradient_backward",
    "contrastive_loss_from_logits",
    "info_nce_loss",
    "nt_xent_loss",
    # training
    "CancelGradientsCallback",
    "DINOTrainer",
    "DINOTrainingArguments",
    "SwAVTrainer",
    "WeightDecayScheduleCallback",
    "swav_multi_crop_collator",
    "DualEncoderTrainer",
    "BYOLTrainer",
    "BarlowTwinsTrainer",
    "SimSiamTrainer",
    "VICRegTrainer",
    "CollapseGuardCallback",
    "LARS",
    "MoCoTrainer",
    "SSLStateUpdateCallback",
    "SSLTrainer",
    "SSLTrainingArguments",
    "SafeTrainer",
    "NonFiniteError",
    "last_complete_checkpoint",
    "SimCLRTrainer",
    "cosine_schedule",
    "effective_rank",
    # distributed and evaluation
    "average_across_processes",
    "average_gradients",
    "check_teacher_sharding",
    "MomentumTeacher",
    "convert_sync_batchnorm",
    "extract_features",
    "BackboneForImageClassification",
    "DataCollatorForImageClassification",
    "KNNEvaluationCallback",
    "LinearProbeResult",
    "classification_accuracy",
    "dataset_features",
    "feature_extractor",
    "fine_tune",
    "label_fraction_subset",
    "linear_probe",
    "encode_images",
    "encode_texts",
    "image_text_retrieval",
    "zero_shot_classification",
    "zero_shot_classifier",
    "TopKAccuracy",
    "load_encoder",
    "plot_embeddings",
    "plot_training_curves",
    # hub
    "native_export_problem",
    "push_backbone_to_hub",
    "push_folder_to_hub",
    "save_backbone",
    "save_towers",
    "write_card_and_push",
    "write_model_card",
    "write_ssl_model_card",
    "gather_no_grad",
    "gather_with_grad",
    "knn_accuracy",
    "knn_evaluate",
    "knn_predict",
]

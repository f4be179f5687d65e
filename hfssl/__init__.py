"""hfssl: self-supervised learning for the Hugging Face ecosystem.

The public names, grouped by layer from the bottom up: data and collators, augmentations, losses, models,
distributed training and optimisation, trainers, evaluation, export and the Hub (`__all__` in the same groups).
"""

# data and collators
from hfssl.collators.image_text import DataCollatorForImageText
from hfssl.collators.masked_image import DataCollatorForMaskedImageModeling
from hfssl.collators.mlm import DataCollatorForMaskedLM
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.collators.pretext import DataCollatorForColorization, DataCollatorForJigsaw, DataCollatorForRotation
from hfssl.collators.sentence_pairs import DataCollatorForSentencePairs
from hfssl.collators.skip_gram import DataCollatorForSkipGram, count_token_ids
from hfssl.collators.span_corruption import DataCollatorForSpanCorruption, compute_input_and_target_lengths
from hfssl.data.images import load_image_dataset
from hfssl.data.tokenizer_training import (
    train_byte_level_bpe_tokenizer, train_unigram_tokenizer, train_word_level_tokenizer,
)  # fmt: skip

# augmentations
from hfssl.augmentations.normalization import normalization_from
from hfssl.augmentations.presets import ViewAugmentation
from hfssl.augmentations.seeding import WorkerSeededGenerator
from hfssl.augmentations.text import (
    BackTranslation, EasyDataAugmentation, Seq2SeqTranslator, random_deletion, random_insertion, random_swap,
    synonym_replacement,
)  # fmt: skip
from hfssl.augmentations.transforms import (
    BYOLTransform, DINOTransform, MoCoV2Transform, MultiViewTransform, SimCLRTransform, SwAVTransform,
)  # fmt: skip

# losses
from hfssl.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from hfssl.losses.byol import byol_loss, simsiam_loss
from hfssl.losses.clip import clip_loss, siglip_loss
from hfssl.losses.dino import (
    DINOLoss, dino_loss, teacher_batch_center, teacher_probabilities, teacher_temperature_schedule, update_center,
)  # fmt: skip
from hfssl.losses.grad_cache import cached_gradient_backward
from hfssl.losses.info_nce import InfoNCELoss, info_nce_loss
from hfssl.losses.negative_sampling import contrastive_loss_from_logits
from hfssl.losses.nt_xent import NTXentLoss, nt_xent_loss
from hfssl.losses.swav import SwAVLoss, sinkhorn_knopp, swav_loss
from hfssl.losses.temperature import LearnableTemperature
from hfssl.losses.vicreg import VICRegLoss, vicreg_loss

# models
from hfssl.models.backbone import Backbone, SSLBackboneConfig
from hfssl.models.barlow_twins import BarlowTwinsConfig, BarlowTwinsModel
from hfssl.models.base import SSLPreTrainedModel
from hfssl.models.byol import BYOLConfig, BYOLModel
from hfssl.models.clip import DualEncoderConfig, DualEncoderModel
from hfssl.models.dino import DINOConfig, DINOHead, DINOModel
from hfssl.models.heads import MLPHead
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.pretext_heads import ColorizationHead, JigsawHead, RotationPredictionHead
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.models.simcse import SimCSEConfig, SimCSEModel
from hfssl.models.simsiam import SimSiamConfig, SimSiamModel
from hfssl.models.swav import SwAVConfig, SwAVModel
from hfssl.models.teacher import MomentumTeacher, check_teacher_sharding, cosine_schedule
from hfssl.models.vicreg import VICRegConfig, VICRegModel
from hfssl.models.word2vec import Word2VecConfig, Word2VecModel

# distributed training and optimisation
from hfssl.distributed import (
    average_across_processes, average_gradients, convert_sync_batchnorm, gather_no_grad, gather_with_grad,
)  # fmt: skip
from hfssl.optim import LARS

# trainers
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.byol import BYOLTrainer, SimSiamTrainer
from hfssl.trainers.callbacks import CancelGradientsCallback, SSLStateUpdateCallback, WeightDecayScheduleCallback
from hfssl.trainers.checkpoints import last_complete_checkpoint
from hfssl.trainers.clip import DualEncoderTrainer
from hfssl.trainers.collapse import CollapseGuardCallback, effective_rank
from hfssl.trainers.dino import DINOTrainer, DINOTrainingArguments
from hfssl.trainers.moco import MoCoTrainer
from hfssl.trainers.redundancy import BarlowTwinsTrainer, VICRegTrainer
from hfssl.trainers.safe_trainer import NonFiniteError, SafeTrainer
from hfssl.trainers.simclr import SimCLRTrainer
from hfssl.trainers.ssl_trainer import SSLTrainer
from hfssl.trainers.swav import SwAVTrainer

# evaluation
from hfssl.evaluation.callbacks import KNNEvaluationCallback
from hfssl.evaluation.features import dataset_features, extract_features, feature_extractor, knn_evaluate, load_encoder
from hfssl.evaluation.fine_tune import (
    BackboneForImageClassification, DataCollatorForImageClassification, classification_accuracy, fine_tune,
    label_fraction_subset,
)  # fmt: skip
from hfssl.evaluation.knn import knn_accuracy, knn_predict
from hfssl.evaluation.linear_probe import LinearProbeResult, linear_probe
from hfssl.evaluation.metrics import TopKAccuracy
from hfssl.evaluation.plots import plot_embeddings, plot_training_curves
from hfssl.evaluation.zero_shot import (
    encode_images, encode_texts, image_text_retrieval, zero_shot_classification, zero_shot_classifier,
)  # fmt: skip

# export and the Hub
from hfssl.export import (
    create_hub_repo, mae_encoder_as_vit, native_export_problem, push_backbone_to_hub, push_folder_to_hub,
    save_backbone, save_sentence_encoder, save_towers, write_model_card,
)  # fmt: skip

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # data and collators
    "DataCollatorForColorization", "DataCollatorForImageText", "DataCollatorForJigsaw",
    "DataCollatorForMaskedImageModeling", "DataCollatorForMaskedLM", "DataCollatorForMultiView",
    "DataCollatorForRotation", "DataCollatorForSentencePairs", "DataCollatorForSkipGram",
    "DataCollatorForSpanCorruption", "compute_input_and_target_lengths", "count_token_ids", "load_image_dataset",
    "train_byte_level_bpe_tokenizer", "train_unigram_tokenizer", "train_word_level_tokenizer",
    # augmentations
    "BackTranslation", "BYOLTransform", "DINOTransform", "EasyDataAugmentation", "MoCoV2Transform",
    "MultiViewTransform", "Seq2SeqTranslator", "SimCLRTransform", "SwAVTransform", "ViewAugmentation",
    "WorkerSeededGenerator", "normalization_from", "random_deletion", "random_insertion", "random_swap",
    "synonym_replacement",
    # losses
    "BarlowTwinsLoss", "DINOLoss", "InfoNCELoss", "LearnableTemperature", "NTXentLoss", "SwAVLoss", "VICRegLoss",
    "barlow_twins_loss", "byol_loss", "cached_gradient_backward", "clip_loss", "contrastive_loss_from_logits",
    "dino_loss", "info_nce_loss", "nt_xent_loss", "siglip_loss", "simsiam_loss", "sinkhorn_knopp", "swav_loss",
    "teacher_batch_center", "teacher_probabilities", "teacher_temperature_schedule", "update_center", "vicreg_loss",
    # models
    "Backbone", "BarlowTwinsConfig", "BarlowTwinsModel", "BYOLConfig", "BYOLModel", "ColorizationHead", "DINOConfig",
    "DINOHead", "DINOModel", "DualEncoderConfig", "DualEncoderModel", "JigsawHead", "MLPHead", "MoCoConfig",
    "MoCoModel", "MomentumTeacher", "RotationPredictionHead", "SimCLRConfig", "SimCLRModel", "SimCSEConfig",
    "SimCSEModel", "SimSiamConfig", "SimSiamModel", "SSLBackboneConfig", "SSLModelOutput", "SSLPreTrainedModel",
    "SwAVConfig", "SwAVModel", "VICRegConfig", "VICRegModel", "Word2VecConfig", "Word2VecModel",
    "check_teacher_sharding", "cosine_schedule",
    # distributed training and optimisation
    "LARS", "average_across_processes", "average_gradients", "convert_sync_batchnorm", "gather_no_grad",
    "gather_with_grad",
    # trainers
    "BarlowTwinsTrainer", "BYOLTrainer", "CancelGradientsCallback", "CollapseGuardCallback", "DINOTrainer",
    "DINOTrainingArguments", "DualEncoderTrainer", "MoCoTrainer", "NonFiniteError", "SafeTrainer", "SimCLRTrainer",
    "SimSiamTrainer", "SSLStateUpdateCallback", "SSLTrainer", "SSLTrainingArguments", "SwAVTrainer", "VICRegTrainer",
    "WeightDecayScheduleCallback", "effective_rank", "last_complete_checkpoint",
    # evaluation
    "BackboneForImageClassification", "DataCollatorForImageClassification", "KNNEvaluationCallback",
    "LinearProbeResult", "TopKAccuracy", "classification_accuracy", "dataset_features", "encode_images",
    "encode_texts", "extract_features", "feature_extractor", "fine_tune", "image_text_retrieval", "knn_accuracy",
    "knn_evaluate", "knn_predict", "label_fraction_subset", "linear_probe", "load_encoder", "plot_embeddings",
    "plot_training_curves", "zero_shot_classification", "zero_shot_classifier",
    # export and the Hub
    "create_hub_repo", "mae_encoder_as_vit", "native_export_problem", "push_backbone_to_hub", "push_folder_to_hub",
    "save_backbone", "save_sentence_encoder", "save_towers", "write_model_card",
]  # fmt: skip

"""Trainers for self-supervised methods: the shared `SSLTrainer`, its arguments, and one trainer per method."""

from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.byol import BYOLTrainer, SimSiamTrainer
from hfssl.trainers.clip import DualEncoderTrainer
from hfssl.trainers.callbacks import SSLStateUpdateCallback, cosine_schedule
from hfssl.trainers.collapse import CollapseGuardCallback, effective_rank
from hfssl.trainers.dino import DINOTrainer, DINOTrainingArguments
from hfssl.trainers.moco import MoCoTrainer
from hfssl.trainers.redundancy import BarlowTwinsTrainer, VICRegTrainer
from hfssl.trainers.simclr import SimCLRTrainer
from hfssl.trainers.swav import SwAVTrainer
from hfssl.trainers.checkpoints import last_complete_checkpoint
from hfssl.trainers.safe_trainer import NonFiniteError, SafeTrainer
from hfssl.trainers.ssl_trainer import SSLTrainer, embedding_std

__all__ = [
    "BYOLTrainer", "BarlowTwinsTrainer", "CollapseGuardCallback", "DINOTrainer", "DINOTrainingArguments",
    "DualEncoderTrainer", "MoCoTrainer", "NonFiniteError", "SSLStateUpdateCallback", "SSLTrainer",
    "SSLTrainingArguments", "SafeTrainer", "SimCLRTrainer", "SimSiamTrainer", "SwAVTrainer", "VICRegTrainer",
    "cosine_schedule", "effective_rank", "embedding_std", "last_complete_checkpoint",
]

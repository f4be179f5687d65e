"""Self-supervised losses, one per file, as pure functions of tensors, and beside them the modules that hold a loss's
settings and state (`DINOLoss`, `NTXentLoss`, `InfoNCELoss`, `SwAVLoss`, `LearnableTemperature`)."""

from hfssl.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from hfssl.losses.byol import byol_loss, simsiam_loss
from hfssl.losses.clip import clip_loss, siglip_loss
from hfssl.losses.dino import DINOLoss, dino_loss, update_center
from hfssl.losses.info_nce import InfoNCELoss, info_nce_loss
from hfssl.losses.negative_sampling import NEGATIVE_SAMPLING_STRATEGIES, contrastive_loss_from_logits
from hfssl.losses.nt_xent import NTXentLoss, nt_xent_loss
from hfssl.losses.swav import SwAVLoss, sinkhorn_knopp, swav_loss
from hfssl.losses.temperature import LearnableTemperature
from hfssl.losses.vicreg import VICRegLoss, vicreg_loss

__all__ = [
    "BarlowTwinsLoss", "DINOLoss", "InfoNCELoss", "LearnableTemperature", "NEGATIVE_SAMPLING_STRATEGIES", "NTXentLoss",
    "SwAVLoss", "VICRegLoss",
    "barlow_twins_loss", "byol_loss", "clip_loss", "contrastive_loss_from_logits", "dino_loss", "info_nce_loss",
    "nt_xent_loss", "siglip_loss", "simsiam_loss", "sinkhorn_knopp", "swav_loss", "update_center", "vicreg_loss",
]

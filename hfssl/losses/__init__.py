"""Self-supervised losses, one per file, as pure functions of tensors."""

from hfssl.losses.info_nce import info_nce_loss
from hfssl.losses.negative_sampling import NEGATIVE_SAMPLING_STRATEGIES, contrastive_loss_from_logits
from hfssl.losses.nt_xent import nt_xent_loss
from hfssl.losses.temperature import LearnableTemperature

__all__ = [
    "NEGATIVE_SAMPLING_STRATEGIES",
    "LearnableTemperature",
    "contrastive_loss_from_logits",
    "info_nce_loss",
    "nt_xent_loss",
]

"""`BarlowTwinsTrainer` and `VICRegTrainer`: `SSLTrainer` for the redundancy-reduction methods, buildable from a
backbone name (TRL-style). Both losses use global-batch statistics, so `gradient_cache_chunk_size` gives the
statistics of a large batch in the activation memory of a chunk."""

from __future__ import annotations

from hfssl.models.barlow_twins import BarlowTwinsModel
from hfssl.models.vicreg import VICRegModel
from hfssl.trainers.ssl_trainer import SSLTrainer


class BarlowTwinsTrainer(SSLTrainer):
    """Train Barlow Twins (Zbontar et al., 2021). `model` may be a `BarlowTwinsModel` or a backbone name;
    `data_collator` defaults to `DataCollatorForMultiView.byol` (Barlow Twins uses BYOL's augmentations) at the
    backbone's input size (paper: LARS, `lars=True`, lr 0.2 for weights and 0.0048 for biases and BN, weight decay
    1.5e-6, batch 2048). Otherwise as `SSLTrainer`.
    """

    model_class = BarlowTwinsModel
    default_arguments = {"output_dir": "outputs/barlow_twins"}


class VICRegTrainer(SSLTrainer):
    """Train VICReg (Bardes et al., 2022). `model` may be a `VICRegModel` or a backbone name; `data_collator` defaults
    to `DataCollatorForMultiView.byol` (VICReg uses BYOL's augmentations) at the backbone's input size (paper: LARS,
    `lars=True`, base lr 0.2 * batch / 256, weight decay 1e-6, batch 2048). Otherwise as `SSLTrainer`.
    """

    model_class = VICRegModel
    default_arguments = {"output_dir": "outputs/vicreg"}

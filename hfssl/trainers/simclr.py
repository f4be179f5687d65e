"""`SimCLRTrainer`: `SSLTrainer` for `SimCLRModel`, buildable from a backbone name (TRL-style)."""

from __future__ import annotations

from hfssl.models.simclr import SimCLRModel
from hfssl.trainers.ssl_trainer import SSLTrainer


class SimCLRTrainer(SSLTrainer):
    """Train SimCLR (Chen et al., 2020). `model` may be a `SimCLRModel` or a backbone name (timm name, Hub id or
    folder) to build `SimCLRModel(SimCLRConfig(backbone_name=model))` from; `data_collator` defaults to
    `DataCollatorForMultiView.simclr` at the backbone's input size with its normalisation. Otherwise as `SSLTrainer`.
    """

    model_class = SimCLRModel
    default_arguments = {"output_dir": "outputs/simclr"}

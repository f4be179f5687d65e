"""`BYOLTrainer` and `SimSiamTrainer`: `SSLTrainer` for the negative-free predictor methods, buildable from a
backbone name (TRL-style)."""

from __future__ import annotations

from hfssl.models.byol import BYOLModel
from hfssl.models.simsiam import SimSiamModel
from hfssl.trainers.ssl_trainer import SSLTrainer


class BYOLTrainer(SSLTrainer):
    """Train BYOL (Grill et al., 2020). The target EMA happens after each optimizer step (`SSLStateUpdateCallback`),
    the momentum following `config.momentum` -> `config.momentum_final` (0.996 -> 1.0) or
    `args.teacher_momentum(_final)` on a cosine schedule. `model` may be a `BYOLModel` or a backbone name;
    `data_collator` defaults to `DataCollatorForMultiView.byol` at the backbone's input size; BYOL trains with LARS
    (`lars=True`). Otherwise as `SSLTrainer`.
    """

    model_class = BYOLModel
    default_arguments = {"output_dir": "outputs/byol"}


class SimSiamTrainer(SSLTrainer):
    """Train SimSiam (Chen & He, 2021; no teacher, no state after the step). `model` may be a `SimSiamModel` or a
    backbone name; `data_collator` defaults to `DataCollatorForMultiView.moco_v2` (SimSiam uses MoCo v2's
    augmentations) at the backbone's input size; the default arguments keep the predictor at the base learning rate
    (`fixed_predictor_lr=True`; paper: SGD, lr 0.05 * batch / 256, momentum 0.9, weight decay 1e-4, cosine schedule).
    Otherwise as `SSLTrainer`.
    """

    model_class = SimSiamModel
    default_arguments = {"output_dir": "outputs/simsiam", "fixed_predictor_lr": True}

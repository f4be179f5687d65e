"""`BYOLTrainer` and `SimSiamTrainer`: `SSLTrainer` for the negative-free predictor methods, buildable from a
backbone name (TRL-style)."""

from __future__ import annotations

from typing import Any

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.models.byol import BYOLConfig, BYOLModel
from hfssl.models.simsiam import SimSiamConfig, SimSiamModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.ssl_trainer import SSLTrainer


def collator_at_backbone_size(model: Any, preset: Any) -> DataCollatorForMultiView:
    """A `DataCollatorForMultiView` preset at the input size, mean and std of `model.backbone`."""
    data_config = model.backbone.data_config
    return preset(image_size=data_config["input_size"][-1], mean=data_config["mean"], std=data_config["std"])


class BYOLTrainer(SSLTrainer):
    """Train BYOL. The target EMA happens after each optimizer step (`SSLStateUpdateCallback`), the momentum following
    `config.momentum` -> `config.momentum_final` (0.996 -> 1.0) or `args.teacher_momentum(_final)` on a cosine schedule.

    Args:
        model (`BYOLModel` or `str`): a model, or a backbone name to build `BYOLModel(BYOLConfig(backbone_name=model))`
            from.
        args (`SSLTrainingArguments`, *optional*): training arguments (BYOL: LARS, `lars=True`).
        data_collator (*optional*): defaults to `DataCollatorForMultiView.byol` at the backbone's input size.
        **kwargs: the other `SSLTrainer` / `Trainer` arguments.
    """

    def __init__(
        self, model: BYOLModel | str, args: SSLTrainingArguments | None = None, data_collator: Any = None, **kwargs: Any
    ) -> None:
        if isinstance(model, str):
            model = BYOLModel(BYOLConfig(backbone_name=model))
        if not isinstance(model, BYOLModel):
            raise TypeError(f"BYOLTrainer needs a BYOLModel or a backbone name; got {type(model).__name__}.")
        if data_collator is None:
            data_collator = collator_at_backbone_size(model, DataCollatorForMultiView.byol)
        args = args if args is not None else SSLTrainingArguments(output_dir="outputs/byol")
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)


class SimSiamTrainer(SSLTrainer):
    """Train SimSiam (no teacher, no state after the step).

    Args:
        model (`SimSiamModel` or `str`): a model, or a backbone name to build
            `SimSiamModel(SimSiamConfig(backbone_name=model))` from.
        args (`SSLTrainingArguments`, *optional*): training arguments (SimSiam: SGD, lr 0.05 * batch / 256,
            momentum 0.9, weight decay 1e-4, cosine schedule, `fixed_predictor_lr=True`).
        data_collator (*optional*): defaults to `DataCollatorForMultiView.moco_v2` (SimSiam uses MoCo v2's
            augmentations) at the backbone's input size.
        **kwargs: the other `SSLTrainer` / `Trainer` arguments.
    """

    def __init__(
        self, model: SimSiamModel | str, args: SSLTrainingArguments | None = None, data_collator: Any = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        if isinstance(model, str):
            model = SimSiamModel(SimSiamConfig(backbone_name=model))
        if not isinstance(model, SimSiamModel):
            raise TypeError(f"SimSiamTrainer needs a SimSiamModel or a backbone name; got {type(model).__name__}.")
        if data_collator is None:
            data_collator = collator_at_backbone_size(model, DataCollatorForMultiView.moco_v2)
        args = args if args is not None else SSLTrainingArguments(output_dir="outputs/simsiam", fixed_predictor_lr=True)
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)

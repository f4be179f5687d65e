"""`SimCLRTrainer`: `SSLTrainer` for `SimCLRModel`, buildable from a backbone name (TRL-style)."""

from __future__ import annotations

from typing import Any

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.ssl_trainer import SSLTrainer


class SimCLRTrainer(SSLTrainer):
    """Train SimCLR.

    Args:
        model (`SimCLRModel` or `str`): a model, or a backbone name (timm name, Hub id or folder) to build
            `SimCLRModel(SimCLRConfig(backbone_name=model))` from.
        args (`SSLTrainingArguments`, *optional*): training arguments.
        data_collator (*optional*): defaults to `DataCollatorForMultiView.simclr` at the backbone's input size with
            its normalisation.
        **kwargs: the other `SSLTrainer` / `Trainer` arguments (`train_dataset`, `eval_dataset`, `callbacks`, ...).
    """

    def __init__(
        self, model: SimCLRModel | str, args: SSLTrainingArguments | None = None, data_collator: Any = None, **kwargs: Any
    ) -> None:
        if isinstance(model, str):
            model = SimCLRModel(SimCLRConfig(backbone_name=model))
        if not isinstance(model, SimCLRModel):
            raise TypeError(f"SimCLRTrainer needs a SimCLRModel or a backbone name; got {type(model).__name__}.")
        if data_collator is None:
            data_config = model.backbone.data_config
            data_collator = DataCollatorForMultiView.simclr(
                image_size=data_config["input_size"][-1], mean=data_config["mean"], std=data_config["std"]
            )
        args = args if args is not None else SSLTrainingArguments(output_dir="outputs/simclr")
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)

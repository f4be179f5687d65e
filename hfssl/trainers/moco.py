"""`MoCoTrainer`: `SSLTrainer` for `MoCoModel` (v2 or v3), buildable from a backbone name (TRL-style)."""

from __future__ import annotations

from typing import Any

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.ssl_trainer import SSLTrainer


class MoCoTrainer(SSLTrainer):
    """Train MoCo v2 or v3. The teacher EMA and the queue writes happen after each optimizer step
    (`SSLStateUpdateCallback`), the momentum following the model config or `args.teacher_momentum(_final)`.

    Args:
        model (`MoCoModel` or `str`): a model, or a backbone name to build `MoCoModel(MoCoConfig(backbone_name=model))`
            (MoCo v2) from.
        args (`SSLTrainingArguments`, *optional*): training arguments.
        data_collator (*optional*): defaults to `DataCollatorForMultiView.moco_v2` at the backbone's input size.
        **kwargs: the other `SSLTrainer` / `Trainer` arguments.
    """

    def __init__(
        self, model: MoCoModel | str, args: SSLTrainingArguments | None = None, data_collator: Any = None, **kwargs: Any
    ) -> None:
        if isinstance(model, str):
            model = MoCoModel(MoCoConfig(backbone_name=model))
        if not isinstance(model, MoCoModel):
            raise TypeError(f"MoCoTrainer needs a MoCoModel or a backbone name; got {type(model).__name__}.")
        if data_collator is None:
            data_config = model.backbone.data_config
            data_collator = DataCollatorForMultiView.moco_v2(
                image_size=data_config["input_size"][-1], mean=data_config["mean"], std=data_config["std"]
            )
        args = args if args is not None else SSLTrainingArguments(output_dir="outputs/moco")
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)

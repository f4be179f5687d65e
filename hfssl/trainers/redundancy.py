"""`BarlowTwinsTrainer` and `VICRegTrainer`: `SSLTrainer` for the redundancy-reduction methods, buildable from a
backbone name (TRL-style). Both losses use global-batch statistics, so `gradient_cache_chunk_size` gives the
statistics of a large batch in the activation memory of a chunk."""

from __future__ import annotations

from typing import Any

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.models.barlow_twins import BarlowTwinsConfig, BarlowTwinsModel
from hfssl.models.vicreg import VICRegConfig, VICRegModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.byol import collator_at_backbone_size
from hfssl.trainers.ssl_trainer import SSLTrainer


class BarlowTwinsTrainer(SSLTrainer):
    """Train Barlow Twins.

    Args:
        model (`BarlowTwinsModel` or `str`): a model, or a backbone name to build
            `BarlowTwinsModel(BarlowTwinsConfig(backbone_name=model))` from.
        args (`SSLTrainingArguments`, *optional*): training arguments (paper: LARS, `lars=True`, lr 0.2 for weights
            and 0.0048 for biases and BN, weight decay 1.5e-6, batch 2048).
        data_collator (*optional*): defaults to `DataCollatorForMultiView.byol` (Barlow Twins uses BYOL's
            augmentations) at the backbone's input size.
        **kwargs: the other `SSLTrainer` / `Trainer` arguments.
    """

    def __init__(
        self, model: BarlowTwinsModel | str, args: SSLTrainingArguments | None = None, data_collator: Any = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        if isinstance(model, str):
            model = BarlowTwinsModel(BarlowTwinsConfig(backbone_name=model))
        if not isinstance(model, BarlowTwinsModel):
            raise TypeError(
                f"BarlowTwinsTrainer needs a BarlowTwinsModel or a backbone name; got {type(model).__name__}."
            )
        if data_collator is None:
            data_collator = collator_at_backbone_size(model, DataCollatorForMultiView.byol)
        args = args if args is not None else SSLTrainingArguments(output_dir="outputs/barlow_twins")
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)


class VICRegTrainer(SSLTrainer):
    """Train VICReg.

    Args:
        model (`VICRegModel` or `str`): a model, or a backbone name to build `VICRegModel(VICRegConfig(backbone_name=
            model))` from.
        args (`SSLTrainingArguments`, *optional*): training arguments (paper: LARS, `lars=True`, base lr 0.2 *
            batch / 256, weight decay 1e-6, batch 2048).
        data_collator (*optional*): defaults to `DataCollatorForMultiView.byol` (VICReg uses BYOL's augmentations)
            at the backbone's input size.
        **kwargs: the other `SSLTrainer` / `Trainer` arguments.
    """

    def __init__(
        self, model: VICRegModel | str, args: SSLTrainingArguments | None = None, data_collator: Any = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        if isinstance(model, str):
            model = VICRegModel(VICRegConfig(backbone_name=model))
        if not isinstance(model, VICRegModel):
            raise TypeError(f"VICRegTrainer needs a VICRegModel or a backbone name; got {type(model).__name__}.")
        if data_collator is None:
            data_collator = collator_at_backbone_size(model, DataCollatorForMultiView.byol)
        args = args if args is not None else SSLTrainingArguments(output_dir="outputs/vicreg")
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)

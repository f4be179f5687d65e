"""`SwAVTrainer`: `SSLTrainer` for `SwAVModel` (Caron et al. 2020, main_swav.py). The prototype renormalisation, the
queue writes and the step counter run in `SwAVModel.update_after_step`.
"""

from __future__ import annotations

from typing import Any

from hfssl.models.swav import SwAVModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.callbacks import CancelGradientsCallback
from hfssl.trainers.ssl_trainer import SSLTrainer


class SwAVTrainer(SSLTrainer):
    """Train SwAV (Caron et al., 2020). `model` may be a `SwAVModel` or a backbone name; `data_collator` defaults to
    `DataCollatorForMultiView.swav` at the backbone's input size (SwAV trains with LARS, `lars=True`, lr 4.8 at batch
    4096, weight decay 1e-6, cosine schedule). With a queue, `ddp_broadcast_buffers` is turned off (each process keeps
    its own queue). The prototypes stay frozen for `config.freeze_prototypes_steps` (their gradients dropped before
    the optimizer step, as the reference). Otherwise as `SSLTrainer`.
    """

    model_class = SwAVModel
    default_arguments = {"output_dir": "outputs/swav"}

    def __init__(self, model: SwAVModel | str, args: SSLTrainingArguments | None = None, **kwargs: Any) -> None:
        model = self.build_model(model)
        args = args if args is not None else self.arguments_class(**self.default_arguments)
        if model.config.queue_length:
            if args.ddp_broadcast_buffers:
                raise ValueError(
                    "SwAVModel's queue holds this process's own projections, but ddp_broadcast_buffers=True would copy "
                    "rank 0's queue to every process; leave ddp_broadcast_buffers unset (SwAVTrainer sets it False)."
                )
            args.ddp_broadcast_buffers = False
        super().__init__(model=model, args=args, **kwargs)
        self.add_callback(CancelGradientsCallback(
            self, lambda model: [model.prototypes.weight], lambda model: model.config.freeze_prototypes_steps
        ))  # fmt: skip

"""`MoCoTrainer`: `SSLTrainer` for `MoCoModel` (v2 or v3), buildable from a backbone name (TRL-style)."""

from __future__ import annotations

from hfssl.models.moco import MoCoModel
from hfssl.trainers.ssl_trainer import SSLTrainer


class MoCoTrainer(SSLTrainer):
    """Train MoCo v2 or v3 (He et al., 2020; Chen et al., 2020 and 2021). The teacher EMA and the queue writes happen
    after each optimizer step (`SSLStateUpdateCallback`), the momentum following the model config or
    `args.teacher_momentum(_final)`. `model` may be a `MoCoModel` or a backbone name (MoCo v2); `data_collator`
    defaults to `DataCollatorForMultiView.moco_v2` at the backbone's input size. Otherwise as `SSLTrainer`.
    """

    model_class = MoCoModel
    default_arguments = {"output_dir": "outputs/moco"}

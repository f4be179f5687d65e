"""Training arguments for self-supervised methods: `TrainingArguments` with SSL defaults and knobs (TRL-style)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments


@dataclass
class SSLTrainingArguments(TrainingArguments):
    """`TrainingArguments` for `SSLTrainer`, with defaults that avoid the usual Trainer pitfalls for image SSL.

    Changed defaults:
        remove_unused_columns (`bool`, defaults to `False`): keep the `image` column for the multi-view collator.
        label_names (`list[str]`, defaults to `[]`): SSL has no labels: evaluation reports the SSL loss.
        dataloader_drop_last (`bool`, defaults to `True`): no small last batch (contrastive losses and batch norm
            degrade on tiny batches; SimCLR and MoCo drop it).
        max_grad_norm (`float`, defaults to 0.0): no gradient clipping, as the SimCLR, MoCo, BYOL, SimSiam, SwAV,
            Barlow Twins, VICReg and CLIP papers train (Trainer's 1.0 would shrink every large early step; DINO's
            arguments clip at 3.0 per parameter). Trainer still logs the gradient norm.

    SSL arguments:
        teacher_momentum (`float`, *optional*): EMA momentum of a momentum teacher at the first step; `None` takes the
            method's paper default from the model config (MoCo v2: 0.999, v3: 0.99).
        teacher_momentum_final (`float`, *optional*): the momentum at the last step, reached on a cosine schedule
            (BYOL, MoCo v3: 1.0); `None` takes the model config's.
        lars (`bool`, defaults to `False`): LARS (`hfssl.optim.LARS`, SimCLR / MoCo v3 at large batch), not `optim`.
        lars_momentum (`float`, defaults to 0.9): LARS's SGD momentum.
        lars_trust_coefficient (`float`, defaults to 0.001): LARS's `eta`.
        fixed_predictor_lr (`bool`, defaults to `False`): keep the predictor's learning rate at `learning_rate`
            throughout (no warm-up, no decay) while the rest follows `lr_scheduler_type`, as SimSiam trains
            (`--fix-pred-lr`, the paper's Table 1). For models with a `predictor` (SimSiam, BYOL, MoCo v3).
        exclude_norm_and_bias_from_weight_decay (`bool`, defaults to `True`): no weight decay on one-dimensional
            parameters (biases, every norm's scale and shift, learnt temperatures), as SimCLR, MoCo v3 and BYOL do.
        channels_last (`bool`, defaults to `False`): the model's 4-D weights and the 4-D views in channels-last
            memory format (timm's `--channels-last`, faster for conv nets), the same results up to float rounding.
        sync_batchnorm (`bool`, defaults to `False`): convert every BatchNorm to `torch.nn.SyncBatchNorm`, so batch
            statistics are those of the global batch (SimCLR's global BN, MoCo v3's SyncBN). Needs GPUs.
        gradient_cache_chunk_size (`int`, *optional*): back-propagate the loss of the whole batch chunk by chunk of
            this many images (GradCache, `hfssl.losses.grad_cache`): the exact gradient of the large batch, with its
            negatives, in the activation memory of a chunk (with BatchNorm, the statistics are a chunk's).
        collapse_action (`str`, defaults to `"warn"`): what `CollapseGuardCallback` does when a collapse signal stays
            past its threshold for `collapse_patience` logging steps: `"warn"`, `"stop"` (end training) or `"none"`.
        collapse_min_std (`float`, defaults to 0.05): threshold on `embedding/std * sqrt(P)` (about 1 when healthy).
        collapse_min_effective_rank (`float`, defaults to 1.5): threshold on `embedding/effective_rank` (RankMe).
        collapse_min_uniform_gap (`float`, defaults to 0.01): threshold on `collapse/uniform_loss_gap` (DINO, SwAV).
        collapse_patience (`int`, defaults to 3): consecutive logging steps past a threshold before acting.
        collapse_check_start (`float`, defaults to 0.1): no check before this step (a fraction of the run when < 1).
        skip_non_finite_steps (`bool`, defaults to `False`): skip (with a warning) an optimizer step whose input or loss
            is nan/inf instead of stopping with an error (`SafeTrainer`); one process only.
        knn_eval_steps (`int`, *optional*): log the weighted-kNN top-1 of the encoder as `"eval_knn/top1"` every this
            many optimizer steps (`hfssl.evaluation.callbacks.add_knn_evaluation`, which the image recipes call).
        knn_k (`int`, defaults to 200), knn_temperature (`float`, defaults to 0.1): the kNN's neighbours and vote
            temperature (InstDisc, DINO; DINO also reports k=20, better below a few thousand training images).
    """

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep every dataset column (the multi-view collator needs the images)."}
    )
    label_names: list[str] | None = field(
        default_factory=list, metadata={"help": "SSL has no labels: evaluation reports the SSL loss."}
    )
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Drop the incomplete last batch."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping; 0 (default): none, as the SSL papers."})
    teacher_momentum: float | None = field(
        default=None, metadata={"help": "Teacher EMA momentum at step 0 (None: the method's paper default)."}
    )
    teacher_momentum_final: float | None = field(
        default=None, metadata={"help": "Teacher EMA momentum at the last step, cosine schedule (None: paper default)."}
    )
    lars: bool = field(default=False, metadata={"help": "Optimise with LARS (SGD + momentum + trust ratio)."})
    lars_momentum: float = field(default=0.9, metadata={"help": "LARS momentum."})
    lars_trust_coefficient: float = field(default=0.001, metadata={"help": "LARS trust coefficient eta."})
    fixed_predictor_lr: bool = field(
        default=False, metadata={"help": "Predictor at the base learning rate throughout (SimSiam's --fix-pred-lr)."}
    )
    exclude_norm_and_bias_from_weight_decay: bool = field(
        default=True, metadata={"help": "No weight decay on biases, norm parameters and scalars."}
    )
    channels_last: bool = field(
        default=False, metadata={"help": "Channels-last memory format for the model and the views (conv nets)."}
    )
    sync_batchnorm: bool = field(default=False, metadata={"help": "Convert BatchNorm to SyncBatchNorm (GPUs)."})
    gradient_cache_chunk_size: int | None = field(
        default=None,
        metadata={"help": "Embed in chunks of this many images and back-propagate the full-batch loss (GradCache)."},
    )
    collapse_action: str = field(
        default="warn", metadata={"help": "On a collapse signal: warn, stop or none.", "choices": ["warn", "stop", "none"]}
    )
    collapse_min_std: float = field(default=0.05, metadata={"help": "Threshold on embedding/std * sqrt(dim)."})
    collapse_min_effective_rank: float = field(default=1.5, metadata={"help": "Threshold on the effective rank."})
    collapse_min_uniform_gap: float = field(default=0.01, metadata={"help": "Threshold on (ln K - loss) / ln K."})
    collapse_patience: int = field(default=3, metadata={"help": "Logging steps past a threshold before acting."})
    collapse_check_start: float = field(default=0.1, metadata={"help": "First step checked (fraction if < 1)."})
    skip_non_finite_steps: bool = field(
        default=False, metadata={"help": "Skip a step with a nan/inf input or loss instead of stopping (one process)."}
    )
    knn_eval_steps: int | None = field(
        default=None, metadata={"help": "kNN top-1 of the encoder every N steps (labelled data with a test split)."}
    )
    knn_k: int = field(default=200, metadata={"help": "kNN neighbours (InstDisc, DINO: 200; DINO also 20)."})
    knn_temperature: float = field(default=0.1, metadata={"help": "kNN vote temperature (InstDisc, DINO: 0.1)."})

    def __post_init__(self) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
            self.use_cpu = True  # several CPU processes: one gloo job (MULTI_CPU), not independent runs
        if not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns about it every epoch
        if self.gradient_cache_chunk_size is not None and self.gradient_cache_chunk_size < 1:
            raise ValueError(
                f"gradient_cache_chunk_size={self.gradient_cache_chunk_size} must be >= 1 images, or None to train "
                "without the cached-gradient step."
            )
        for name in ("teacher_momentum", "teacher_momentum_final"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1] (MoCo v2 uses 0.999, MoCo v3 / BYOL 0.99 -> 1.0).")
        if self.collapse_action not in ("warn", "stop", "none"):
            raise ValueError(f"collapse_action={self.collapse_action!r} is not supported; use 'warn', 'stop' or 'none'.")
        if self.collapse_patience < 1 or self.collapse_check_start < 0:
            raise ValueError(
                f"collapse_patience={self.collapse_patience} must be >= 1 and collapse_check_start="
                f"{self.collapse_check_start} >= 0 (a step, or a fraction of the run when < 1)."
            )
        if self.knn_eval_steps is not None and self.knn_eval_steps < 1:
            raise ValueError(f"knn_eval_steps={self.knn_eval_steps} must be >= 1 optimizer steps, or None (no kNN).")
        if self.knn_k < 1 or self.knn_temperature <= 0:
            raise ValueError(
                f"knn_k={self.knn_k} must be >= 1 and knn_temperature={self.knn_temperature} > 0 (defaults: 200, 0.1)."
            )
        if not 0.0 <= self.lars_momentum < 1.0:
            raise ValueError(f"lars_momentum={self.lars_momentum} must lie in [0, 1).")
        super().__post_init__()
        if self.skip_non_finite_steps and self.world_size > 1:
            raise ValueError(
                "skip_non_finite_steps=True skips a step in one process only, which would leave the others waiting for "
                f"its gradients ({self.world_size} processes here). Leave it False: a non-finite loss then stops the run."
            )

"""Collapse signals of a batch of embeddings, and the callback that warns (or stops training) when one crosses its
threshold.

Legend: B batch, P embedding dim, K prototypes / output dim of a self-distillation head.

`SSLTrainer` logs `embedding/std` (`embedding_std`) and `embedding/effective_rank` (`effective_rank`) at every
logging step, averaged over the logging window and over processes. DINO and SwAV log `collapse/uniform_loss_gap`,
(ln K - loss) / ln K: 0 when the cross-entropy is stuck at ln K, the loss of a uniform output over the K prototypes
(the collapse users report for DINO and SwAV).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)


def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """The collapse signal of Chen & He 2021 (SimSiam, section 4.1): the mean over dimensions of the std over the
    batch of the L2-normalised embeddings (B, P). About 1/sqrt(P) for spread-out embeddings, 0 for a collapse."""
    return F.normalize(embeddings.detach().float(), dim=1).std(dim=0).mean()


def effective_rank(embeddings: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe's effective rank (Garrido et al. 2023, eq. 1) of a batch of embeddings: a float32 scalar.

    `exp(-sum_k p_k log p_k)` with `p_k = s_k / sum_j s_j + eps`, `s` the singular values of the batch embeddings
    centred over the batch. 1 when all embeddings lie on one line, min(B, P) when they fill the space evenly.

    Args:
        embeddings (`torch.Tensor` of shape `(B, P)`): one view's embeddings (B >= 2).
        eps (`float`): RankMe's epsilon, keeps the logarithm finite.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"effective_rank needs embeddings of shape (B >= 2, P); got {tuple(embeddings.shape)}.")
    centred = embeddings.detach().cpu().double()
    centred = centred - centred.mean(dim=0)
    # The singular values are the square roots of the eigenvalues of the smaller Gram matrix: in float64, the same
    # values as `svdvals` to ~1e-7 relative, and cheaper (it runs at every training step).
    gram = centred.T @ centred if centred.shape[1] <= centred.shape[0] else centred @ centred.T
    singular_values = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    if singular_values.sum() <= 0:
        return torch.tensor(1.0)
    p = singular_values / singular_values.sum() + eps
    return torch.exp(-(p * p.log()).sum()).float()


class CollapseGuardCallback(TrainerCallback):
    """Watches the collapse signals at every logging step and warns, or stops training, when one crosses its threshold.

    A signal is flagged when it is past its threshold (`args.collapse_min_*`) for `args.collapse_patience`
    consecutive logging steps after `args.collapse_check_start` (self-distillation losses start near ln K by
    construction). `args.collapse_action`: `"warn"` logs a warning naming the signal, its value and the usual fixes;
    `"stop"` also ends training; `"none"` does not register the guard. What was flagged is kept in `self.flagged`
    (signal -> step of the warning).

    Args:
        trainer (`Trainer`): the trainer it watches; its `args` hold the thresholds and its `embedding_dim` the
            embedding width P (as `SSLTrainer` records it).
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.streaks: dict[str, int] = {}
        self.flagged: dict[str, int] = {}

    def _start_step(self, state: TrainerState) -> int:
        start = float(getattr(self.trainer.args, "collapse_check_start", 0.0))
        return int(math.ceil(start * state.max_steps)) if 0 < start < 1 else int(start)

    def signals(self, logs: dict[str, float]) -> dict[str, tuple[float, float, str]]:
        """The signals present in `logs` as name -> (value, threshold, what to try)."""
        args, found = self.trainer.args, {}
        dim = self.trainer.embedding_dim
        if "embedding/std" in logs and dim:
            found["embedding/std"] = (
                logs["embedding/std"] * math.sqrt(dim),
                args.collapse_min_std,
                "the embeddings shrink to a point: check the stop-gradient / predictor (BYOL, SimSiam), the teacher "
                "momentum, the learning rate (lower it, or add warm-up) and the augmentation strength",
            )
        if "embedding/effective_rank" in logs:
            found["embedding/effective_rank"] = (
                logs["embedding/effective_rank"],
                args.collapse_min_effective_rank,
                "dimensional collapse: the embeddings use few directions; try a larger batch, a wider projector, "
                "weight decay or a covariance/redundancy term (VICReg, Barlow Twins)",
            )
        if "collapse/uniform_loss_gap" in logs:
            found["collapse/uniform_loss_gap"] = (  # above ln K (sharp wrong predictions) is not the collapse
                abs(logs["collapse/uniform_loss_gap"]),
                args.collapse_min_uniform_gap,
                "the loss is stuck at ln K (uniform output over the K prototypes); for DINO lower the teacher "
                "temperature or raise the centre momentum, for SwAV freeze the prototypes longer or use the queue",
            )
        return found

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs or any(key.startswith("eval_") for key in logs) or state.global_step < self._start_step(state):
            return
        patience = max(1, int(getattr(args, "collapse_patience", 1)))
        for name, (value, threshold, advice) in self.signals(logs).items():
            self.streaks[name] = self.streaks.get(name, 0) + 1 if value < threshold else 0
            if self.streaks[name] < patience or name in self.flagged:
                continue
            self.flagged[name] = state.global_step
            stop = getattr(args, "collapse_action", "warn") == "stop"
            logger.warning(
                "Collapse detected at step %d: %s = %.4g is below %.4g for %d logging step(s); %s.%s",
                state.global_step, name, value, threshold, patience, advice,
                " Stopping training (collapse_action='stop')." if stop else "",
            )  # fmt: skip
            if stop:
                control.should_training_stop = True

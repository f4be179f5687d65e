"""Per-anchor contrastive loss from logits, with the negative-sampling strategies of the SSL literature.

Legend: A anchors, K negatives per anchor.

Every InfoNCE-style loss in hfssl reduces to one positive logit and K negative logits per anchor; this file turns
them into a per-anchor loss under one of these strategies:

- `"uniform"`: the plain InfoNCE / NT-Xent denominator, every negative weighted equally (Oord et al. 2018;
  Chen et al. 2020).
- `"debiased"`: the debiased contrastive loss of Chuang et al. 2020 ("Debiased Contrastive Learning", NeurIPS),
  which corrects for false negatives with the class prior `tau_plus`.
- `"hard"`: hardness-weighted negatives of Robinson et al. 2021 ("Contrastive Learning with Hard Negative Samples",
  ICLR): negatives re-weighted by `exp(beta * logit)`, combined with the debiasing term (`tau_plus=0` disables it).
- `"hardest"`: only the `hardest_k` most similar negatives of each anchor are kept (top-k hard negative mining).
- `"mixed"`: the `hardest_k` hardest negatives plus `num_random` negatives drawn uniformly from the rest
  (mixed negative sampling, Yang et al. 2020, "Mixed Negative Sampling for Learning Two-tower Neural Networks").

The estimators follow the authors' reference code (github.com/chingyaoc/DCL, github.com/joshr17/HCL): with
`p = exp(positive_logit)`, `n_j = exp(negative_logit_j)`, `w_j = K * softmax(beta * negative_logit)_j`,
`Ng = max((sum_j w_j n_j - tau_plus * K * p) / (1 - tau_plus), K * exp(-1 / temperature))` and the loss is
`-log(p / (p + Ng))`. Everything is computed after subtracting the per-anchor maximum logit, so small
temperatures do not overflow.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NEGATIVE_SAMPLING_STRATEGIES = ("uniform", "debiased", "hard", "hardest", "mixed")


def validate_negative_sampling(
    strategy: str, hardness_beta: float, tau_plus: float, hardest_k: int | None, num_random: int
) -> None:
    """Raise a `ValueError` naming the bad setting if the negative-sampling options are inconsistent."""
    if strategy not in NEGATIVE_SAMPLING_STRATEGIES:
        raise ValueError(
            f"negative_sampling={strategy!r} is not supported; choose one of {NEGATIVE_SAMPLING_STRATEGIES}."
        )
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus={tau_plus} must lie in [0, 1) (it is the positive-class prior of Chuang et al.).")
    if hardness_beta < 0:
        raise ValueError(f"hardness_beta={hardness_beta} must be >= 0 (0 gives the debiased loss).")
    if strategy in ("hardest", "mixed") and (hardest_k is None or hardest_k < 1):
        raise ValueError(f"negative_sampling={strategy!r} needs hardest_k >= 1, got hardest_k={hardest_k}.")
    if num_random < 0:
        raise ValueError(f"num_random={num_random} must be >= 0.")


def select_negatives(
    negative_logits: torch.Tensor,
    strategy: str,
    hardest_k: int | None = None,
    num_random: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The negative logits (`torch.Tensor` of shape `(A, K)` -> `(A, K')`) a `"hardest"` or `"mixed"` strategy keeps
    (arguments as `contrastive_loss_from_logits`); other strategies return the input."""
    if strategy not in ("hardest", "mixed"):
        return negative_logits
    num_negatives = negative_logits.shape[1]
    k = min(hardest_k, num_negatives)
    order = negative_logits.detach().argsort(dim=1, descending=True)
    hardest = negative_logits.gather(1, order[:, :k])
    if strategy == "hardest" or num_random == 0 or k == num_negatives:
        return hardest
    rest = order[:, k:]
    scores = torch.rand(rest.shape, generator=generator, device="cpu").to(rest.device)
    picks = rest.gather(1, scores.argsort(dim=1)[:, : min(num_random, rest.shape[1])])
    return torch.cat([hardest, negative_logits.gather(1, picks)], dim=1)


def contrastive_loss_from_logits(
    positive_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    temperature: float | torch.Tensor,
    negative_sampling: str = "uniform",
    hardness_beta: float = 1.0,
    tau_plus: float = 0.1,
    hardest_k: int | None = None,
    num_random: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-anchor InfoNCE loss from one positive and K negative logits (logit = cosine / temperature).

    Args:
        positive_logits (`torch.Tensor` of shape `(A,)`): the logit of each anchor's positive.
        negative_logits (`torch.Tensor` of shape `(A, K)`): the logits of its negatives.
        temperature (`float` or `torch.Tensor`): the temperature the logits were divided by; the debiased and hard
            estimators use it for their lower bound `K * exp(-1 / temperature)`.
        negative_sampling (`str`, defaults to `"uniform"`): see the module docstring.
        hardness_beta (`float`, defaults to 1.0): the concentration `beta` of `"hard"` (Robinson et al. use 0.5-1).
        tau_plus (`float`, defaults to 0.1): the positive-class prior of `"debiased"` and `"hard"` (Chuang et al. 2020
            use 0.1 on CIFAR-10).
        hardest_k (`int`, *optional*): the number of hardest negatives kept by `"hardest"` and `"mixed"`.
        num_random (`int`, defaults to 0): the uniformly drawn extra negatives of `"mixed"`.
        generator (`torch.Generator`, *optional*): the randomness of `"mixed"`.

    Returns:
        `torch.Tensor` of shape `(A,)`: the loss of each anchor.
    """
    validate_negative_sampling(negative_sampling, hardness_beta, tau_plus, hardest_k, num_random)
    negative_logits = select_negatives(negative_logits, negative_sampling, hardest_k, num_random, generator)
    if negative_sampling in ("uniform", "hardest", "mixed"):
        logits = torch.cat([positive_logits[:, None], negative_logits], dim=1)
        return torch.logsumexp(logits, dim=1) - positive_logits

    num_negatives = negative_logits.shape[1]
    beta = hardness_beta if negative_sampling == "hard" else 0.0
    shift = torch.maximum(positive_logits, negative_logits.max(dim=1).values).detach()
    positive = torch.exp(positive_logits - shift)
    # log(sum_j w_j n_j) with w_j = K * softmax(beta * logit)_j, in the shifted frame.
    log_weighted = (
        math.log(num_negatives)
        + torch.logsumexp((1.0 + beta) * negative_logits - beta * shift[:, None], dim=1)
        - torch.logsumexp(beta * (negative_logits - shift[:, None]), dim=1)
        - shift
    )
    estimate = (torch.exp(log_weighted) - tau_plus * num_negatives * positive) / (1.0 - tau_plus)
    inverse_temperature = 1.0 / torch.as_tensor(temperature, dtype=positive.dtype, device=positive.device)
    floor = num_negatives * torch.exp(-inverse_temperature - shift)
    estimate = torch.maximum(estimate, floor)
    return torch.log(positive + estimate) - (positive_logits - shift)


class ContrastiveLossModule(nn.Module):
    """What `NTXentLoss` and `InfoNCELoss` share: a fixed temperature or a module returning one (e.g.
    `LearnableTemperature`, then a child module whose parameter the optimizer sees), and the negative-sampling options
    of `contrastive_loss_from_logits` (`self.sampling`)."""

    def __init__(
        self,
        temperature: float | nn.Module,
        negative_sampling: str = "uniform",
        hardness_beta: float = 1.0,
        tau_plus: float = 0.1,
        hardest_k: int | None = None,
        num_random: int = 0,
        paper_temperatures: str = "",
    ) -> None:
        super().__init__()
        if not isinstance(temperature, nn.Module) and temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0 ({paper_temperatures}).")
        self.temperature = temperature
        self.sampling = dict(negative_sampling=negative_sampling, hardness_beta=hardness_beta, tau_plus=tau_plus,
                             hardest_k=hardest_k, num_random=num_random)  # fmt: skip

    def current_temperature(self) -> torch.Tensor | float:
        """The temperature of this call: the module's output, or the fixed value."""
        return self.temperature() if isinstance(self.temperature, nn.Module) else self.temperature

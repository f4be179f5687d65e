"""InfoNCE between queries and keys, the loss of MoCo (He et al. 2020, "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR; Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning"; Chen et
al. 2021, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV).

Legend: N queries, D embedding dim, M extra negatives (the queue, or other processes' keys).

Each query `q_i` has the positive `k_i`. Its negatives are:
- with `in_batch_negatives=True` (MoCo v3): the other N - 1 keys of the batch;
- the M rows of `negatives` (MoCo v1/v2: the queue of past keys, 65536 in the paper).
MoCo v2 uses temperature 0.2 and the queue only; MoCo v3 uses the batch keys only (temperature 1.0 for ResNet,
0.2 for ViT) and multiplies the loss by `2 * temperature` (`scale_by_temperature=True`), as its reference code does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hfssl.losses.negative_sampling import ContrastiveLossModule, contrastive_loss_from_logits


def info_nce_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float | torch.Tensor = 0.2,
    negatives: torch.Tensor | None = None,
    in_batch_negatives: bool = False,
    scale_by_temperature: bool = False,
    negative_sampling: str = "uniform",
    hardness_beta: float = 1.0,
    tau_plus: float = 0.1,
    hardest_k: int | None = None,
    num_random: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE of queries against their keys and a set of negatives.

    Args:
        query (`torch.Tensor` of shape `(N, D)`): the student embeddings (need not be normalised).
        key (`torch.Tensor` of shape `(N, D)`): the positives, row i for `query[i]` (usually detached teacher output).
        temperature (`float` or `torch.Tensor`, defaults to 0.2): MoCo v2's value.
        negatives (`torch.Tensor` of shape `(M, D)`, *optional*): negatives shared by all queries (queue).
        in_batch_negatives (`bool`, defaults to `False`): also use the other keys of the batch as negatives.
        scale_by_temperature (`bool`, defaults to `False`): multiply the loss by `2 * temperature` (MoCo v3).
        negative_sampling, hardness_beta, tau_plus, hardest_k, num_random, generator: see
            `hfssl.losses.negative_sampling.contrastive_loss_from_logits`.

    Returns:
        `torch.Tensor` (scalar): the mean loss over the N queries.
    """
    if query.ndim != 2 or query.shape != key.shape:
        raise ValueError(
            f"info_nce_loss expects query and key of the same shape (N, D); got {tuple(query.shape)} and "
            f"{tuple(key.shape)}."
        )
    if negatives is None and not in_batch_negatives:
        raise ValueError(
            "info_nce_loss has no negatives: pass `negatives` (e.g. a queue) or set in_batch_negatives=True."
        )
    n = query.shape[0]
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    positive_logits = (q * k).sum(dim=1) / temperature
    parts = []
    if in_batch_negatives:
        if n < 2:
            raise ValueError(f"in_batch_negatives=True needs N >= 2 queries, got N={n}.")
        similarity = q @ k.T / temperature
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=q.device)
        parts.append(similarity[off_diagonal].view(n, n - 1))
    if negatives is not None:
        parts.append(q @ F.normalize(negatives, dim=1).T / temperature)
    loss = contrastive_loss_from_logits(
        positive_logits, torch.cat(parts, dim=1), temperature, negative_sampling, hardness_beta, tau_plus, hardest_k,
        num_random, generator,
    ).mean()  # fmt: skip
    return loss * (2 * temperature) if scale_by_temperature else loss


class InfoNCELoss(ContrastiveLossModule):
    """`info_nce_loss` as a module holding its settings; no state (MoCo's queue belongs to the model: pass it as
    `negatives`).

    Args:
        temperature (`float` or `nn.Module`, defaults to 0.2): a fixed value (MoCo v2: 0.2; v3: 1.0 for ResNet, 0.2
            for ViT), or a module returning a scalar tensor, e.g. `LearnableTemperature()`.
        in_batch_negatives, scale_by_temperature, negative_sampling, hardness_beta, tau_plus, hardest_k, num_random:
            see `info_nce_loss`.

    Shapes: `forward(query (N, D), key (N, D), negatives (M, D) = None, generator = None)` -> scalar, the mean over
    the N queries.
    """

    def __init__(
        self,
        temperature: float | nn.Module = 0.2,
        in_batch_negatives: bool = False,
        scale_by_temperature: bool = False,
        negative_sampling: str = "uniform",
        hardness_beta: float = 1.0,
        tau_plus: float = 0.1,
        hardest_k: int | None = None,
        num_random: int = 0,
    ) -> None:
        super().__init__(temperature, negative_sampling, hardness_beta, tau_plus, hardest_k, num_random,
                         paper_temperatures="MoCo v2: 0.2; MoCo v3: 1.0 or 0.2")  # fmt: skip
        self.in_batch_negatives, self.scale_by_temperature = in_batch_negatives, scale_by_temperature

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        negatives: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """See `info_nce_loss`. Returns: `torch.Tensor` (scalar)."""
        return info_nce_loss(
            query, key, self.current_temperature(), negatives, self.in_batch_negatives, self.scale_by_temperature,
            generator=generator, **self.sampling,
        )  # fmt: skip

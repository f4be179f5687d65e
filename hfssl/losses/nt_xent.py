"""NT-Xent, the normalised-temperature cross-entropy of SimCLR (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", ICML).

Legend: N pairs in the batch, D embedding dim, M extra negatives (a queue, or other processes' embeddings).

The 2N embeddings of the two views are L2-normalised; every one is an anchor whose positive is the other view of
the same image and whose negatives are the 2N - 2 other embeddings of the batch, plus the M extra negatives if
given. The loss is the mean over the 2N anchors. The paper's default temperature is 0.5 for batch 256 on CIFAR-10
(0.1 with LARS at large batch on ImageNet, table 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hfssl.losses.negative_sampling import ContrastiveLossModule, contrastive_loss_from_logits


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float | torch.Tensor = 0.5,
    negatives: torch.Tensor | None = None,
    negative_sampling: str = "uniform",
    hardness_beta: float = 1.0,
    tau_plus: float = 0.1,
    hardest_k: int | None = None,
    num_random: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """NT-Xent over the 2N - 2 in-batch negatives (plus optional extra negatives).

    Args:
        z1 (`torch.Tensor` of shape `(N, D)`): the projections of the first view (need not be normalised).
        z2 (`torch.Tensor` of shape `(N, D)`): the projections of the second view, row i pairs with `z1[i]`.
        temperature (`float` or `torch.Tensor`, defaults to 0.5): a fixed value or a learnable scalar tensor.
        negatives (`torch.Tensor` of shape `(M, D)`, *optional*): extra negatives shared by every anchor, e.g. a
            queue or the embeddings of the other processes (see `hfssl.distributed.gather_with_grad`).
        negative_sampling, hardness_beta, tau_plus, hardest_k, num_random, generator: see
            `hfssl.losses.negative_sampling.contrastive_loss_from_logits`.

    Returns:
        `torch.Tensor` (scalar): the mean loss over the 2N anchors.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent_loss expects z1 and z2 of the same shape (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}."
        )
    if z1.shape[0] < 2 and negatives is None:
        raise ValueError(f"nt_xent_loss needs N >= 2 pairs for in-batch negatives, got N={z1.shape[0]}.")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    similarity = z @ z.T / temperature  # (2N, 2N)
    index = torch.arange(2 * n, device=z.device)
    partner = (index + n) % (2 * n)
    positive_logits = similarity[index, partner]
    keep = torch.ones_like(similarity, dtype=torch.bool)
    keep[index, index] = False
    keep[index, partner] = False
    negative_logits = similarity[keep].view(2 * n, 2 * n - 2)
    if negatives is not None:
        negative_logits = torch.cat([negative_logits, z @ F.normalize(negatives, dim=1).T / temperature], dim=1)
    return contrastive_loss_from_logits(
        positive_logits, negative_logits, temperature, negative_sampling, hardness_beta, tau_plus, hardest_k,
        num_random, generator,
    ).mean()  # fmt: skip


class NTXentLoss(ContrastiveLossModule):
    """`nt_xent_loss` as a module holding its settings (the temperature and the negative sampling); no state.

    Args:
        temperature (`float` or `nn.Module`, defaults to 0.5): a fixed value (SimCLR: 0.5 at batch 256, 0.1 at large
            batch with LARS), or a module returning a scalar tensor, e.g. `LearnableTemperature()`.
        negative_sampling, hardness_beta, tau_plus, hardest_k, num_random: see
            `hfssl.losses.negative_sampling.contrastive_loss_from_logits`.

    Shapes: `forward(z1 (N, D), z2 (N, D), negatives (M, D) = None, generator = None)` -> scalar, the mean over the
    2N anchors.
    """

    def __init__(
        self,
        temperature: float | nn.Module = 0.5,
        negative_sampling: str = "uniform",
        hardness_beta: float = 1.0,
        tau_plus: float = 0.1,
        hardest_k: int | None = None,
        num_random: int = 0,
    ) -> None:
        super().__init__(temperature, negative_sampling, hardness_beta, tau_plus, hardest_k, num_random,
                         paper_temperatures="SimCLR: 0.5, or 0.1 at large batch")  # fmt: skip

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        negatives: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """See `nt_xent_loss`. Returns: `torch.Tensor` (scalar)."""
        return nt_xent_loss(z1, z2, self.current_temperature(), negatives, generator=generator, **self.sampling)

"""The Barlow Twins loss (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
ICML).

Legend: N pairs in the (global) batch, D embedding dim, W processes.

Each embedding dimension is standardised over the batch (a batch norm without affine parameters, as the paper's
code does), then the D x D cross-correlation between the two views, `C = z1n^T z2n / N`, is pushed towards the
identity:

    L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2          (eq. 1-2)

The first term makes the views invariant, the second decorrelates the dimensions (redundancy reduction).
`lambda = 5e-3` in the paper (section 4, "Implementation details"); the official code uses 0.0051.

Distributed: the embeddings are gathered with gradient (`hfssl.distributed.gather_with_grad`), so the statistics are
those of the global batch (as the official code's SyncBatchNorm and all-reduced cross-correlation make them) and W
processes with B pairs each give the loss and (after DDP's mean) the gradients of one process holding N = W * B pairs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from hfssl.distributed import gather_with_grad


class BarlowTwinsLoss(NamedTuple):
    """The Barlow Twins loss and its two unweighted terms (scalars).

    Args:
        loss (`torch.Tensor`): `on_diagonal + lambda_offdiag * off_diagonal`.
        on_diagonal (`torch.Tensor`): `sum_i (1 - C_ii)^2`, the invariance term.
        off_diagonal (`torch.Tensor`): `sum_{i != j} C_ij^2`, the redundancy-reduction term.
    """

    loss: torch.Tensor
    on_diagonal: torch.Tensor
    off_diagonal: torch.Tensor


def gathered_pairs(
    function: str, z1: torch.Tensor, z2: torch.Tensor, gather_distributed: bool, needs: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """`z1` and `z2` checked to be pairs (N, D) and, with `gather_distributed`, gathered over processes with gradient;
    N >= 2 checked, as the batch statistics of Barlow Twins and VICReg need (`needs` says why in the error)."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"{function} expects z1 and z2 of the same shape (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}. "
            "Pass the projections of both views, one row per image in the same order."
        )
    if gather_distributed:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    if z1.shape[0] < 2:
        raise ValueError(f"{function} {needs}; got N={z1.shape[0]}. Use a larger batch (the paper uses 2048).")
    return z1, z2


def standardize(embeddings: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension standardisation over the batch, as `nn.BatchNorm1d(D, affine=False)` in training mode
    (biased variance, `eps` added to it).

    Args:
        embeddings (`torch.Tensor` of shape `(N, D)`).
        eps (`float`, defaults to 1e-5): BatchNorm's epsilon.
    """
    mean = embeddings.mean(dim=0, keepdim=True)
    variance = embeddings.var(dim=0, unbiased=False, keepdim=True)
    return (embeddings - mean) / torch.sqrt(variance + eps)


def barlow_twins_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    lambda_offdiag: float = 5e-3,
    eps: float = 1e-5,
    gather_distributed: bool = True,
) -> BarlowTwinsLoss:
    """Barlow Twins' redundancy-reduction loss between the embeddings of two views.

    Args:
        z1 (`torch.Tensor` of shape `(B, D)`): this process's projector outputs of view 1.
        z2 (`torch.Tensor` of shape `(B, D)`): those of view 2, row i of the same image as `z1[i]`.
        lambda_offdiag (`float`, defaults to 5e-3): the weight of the off-diagonal term (official code: 0.0051).
        eps (`float`, defaults to 1e-5): the standardisation's epsilon (BatchNorm's).
        gather_distributed (`bool`, defaults to `True`): standardise and correlate over the global batch of all
            processes (a no-op on one process).

    Returns:
        `BarlowTwinsLoss(loss, on_diagonal, off_diagonal)`, scalars, identical on every process.
    """
    z1, z2 = gathered_pairs(
        "barlow_twins_loss", z1, z2, gather_distributed, "standardises over the batch and needs N >= 2 pairs"
    )
    if lambda_offdiag < 0:
        raise ValueError(f"lambda_offdiag={lambda_offdiag} must be >= 0 (paper: 5e-3, official code: 0.0051).")
    correlation = standardize(z1, eps).T @ standardize(z2, eps) / z1.shape[0]  # C, (D, D)
    diagonal = torch.diagonal(correlation)
    on_diagonal = (1.0 - diagonal).pow(2).sum()
    off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
    return BarlowTwinsLoss(on_diagonal + lambda_offdiag * off_diagonal, on_diagonal, off_diagonal)

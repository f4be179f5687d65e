"""The VICReg loss (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR).

Legend: N pairs in the (global) batch, D embedding dim, W processes.

Three terms on the expander outputs z1, z2 (section 3, eq. 1-6):
- invariance `s = (1 / (N D)) sum_i ||z1_i - z2_i||^2` (the mean squared error);
- variance `v(z) = (1 / D) sum_j max(0, gamma - sqrt(Var(z_:j) + eps))`, a hinge keeping each dimension's std
  (unbiased variance over the batch) above gamma, for each branch;
- covariance `c(z) = (1 / D) sum_{i != j} Cov(z)_ij^2`, with `Cov(z) = (z - mean)^T (z - mean) / (N - 1)`, for each
  branch.
`L = sim_coeff * s + std_coeff * (v(z1) + v(z2)) / 2 + cov_coeff * (c(z1) + c(z2))`, as the official code computes
it, with the paper's lambda = mu = 25, nu = 1, gamma = 1, eps = 1e-4.

Distributed: as for Barlow Twins, and like the official code (`FullGatherLayer`), the embeddings are gathered with
gradient, so the statistics are those of the global batch (the official code averages the invariance term per
process instead; with equal batches the mean is the same).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from hfssl.losses.barlow_twins import gathered_pairs


class VICRegLoss(NamedTuple):
    """The VICReg loss and its three unweighted terms (scalars).

    Args:
        loss (`torch.Tensor`): `sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance`.
        invariance (`torch.Tensor`): the mean squared error between the views.
        variance (`torch.Tensor`): the std hinge, averaged over dimensions and over the two branches.
        covariance (`torch.Tensor`): the squared off-diagonal covariances divided by D, summed over the two branches.
    """

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor


def variance_term(embeddings: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """The variance hinge `v(z)` (above) of `embeddings` (`torch.Tensor` of shape `(N, D)`): a scalar."""
    return F.relu(gamma - torch.sqrt(embeddings.var(dim=0) + eps)).mean()


def covariance_term(embeddings: torch.Tensor) -> torch.Tensor:
    """The covariance term `c(z)` (above) of `embeddings` (`torch.Tensor` of shape `(N, D)`): a scalar."""
    n, d = embeddings.shape
    centered = embeddings - embeddings.mean(dim=0, keepdim=True)
    covariance = centered.T @ centered / (n - 1)
    return (covariance.pow(2).sum() - torch.diagonal(covariance).pow(2).sum()) / d


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    gamma: float = 1.0,
    gather_distributed: bool = True,
) -> VICRegLoss:
    """VICReg's variance-invariance-covariance loss between the embeddings of two views.

    Args:
        z1 (`torch.Tensor` of shape `(B, D)`): this process's expander outputs of view 1.
        z2 (`torch.Tensor` of shape `(B, D)`): those of view 2, row i of the same image as `z1[i]`.
        sim_coeff (`float`, defaults to 25.0): lambda, the invariance weight.
        std_coeff (`float`, defaults to 25.0): mu, the variance weight.
        cov_coeff (`float`, defaults to 1.0): nu, the covariance weight.
        eps (`float`, defaults to 1e-4): added to the variance before the square root.
        gamma (`float`, defaults to 1.0): the target std of every dimension.
        gather_distributed (`bool`, defaults to `True`): compute the terms over the global batch of all processes
            (a no-op on one process).

    Returns:
        `VICRegLoss(loss, invariance, variance, covariance)`, scalars, identical on every process.
    """
    z1, z2 = gathered_pairs(
        "vicreg_loss", z1, z2, gather_distributed, "needs N >= 2 pairs for its variance and covariance over the batch"
    )
    invariance = F.mse_loss(z1, z2)
    variance = (variance_term(z1, gamma, eps) + variance_term(z2, gamma, eps)) / 2
    covariance = covariance_term(z1) + covariance_term(z2)
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return VICRegLoss(loss, invariance, variance, covariance)

"""The prediction losses of BYOL (Grill et al. 2020, "Bootstrap Your Own Latent", NeurIPS) and SimSiam (Chen & He
2021, "Exploring Simple Siamese Representation Learning", CVPR).

Legend: N pairs in the batch, D embedding dim.

Both compare an online prediction p with a target projection z of the other view, without negatives: BYOL's targets
come from a momentum (EMA) target network, SimSiam's from the same network with the gradient stopped. Both are
per-sample losses averaged over the batch, so they need no communication between processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(function: str, first: torch.Tensor, second: torch.Tensor, names: tuple[str, str]) -> None:
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(
            f"{function} expects {names[0]} and {names[1]} of the same shape (N, D); got {tuple(first.shape)} and "
            f"{tuple(second.shape)}. Pass one row per image, the rows of both in the same image order."
        )


def byol_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised mean squared error, `2 - 2 cos(p_i, z_i)` averaged over the N samples (Grill et al. 2020,
    eq. 2). The gradient reaches `targets` unless they are detached; BYOL's targets come from the target network
    under `torch.no_grad`.

    Args:
        predictions (`torch.Tensor` of shape `(N, D)`): the online predictions q(z) of one view.
        targets (`torch.Tensor` of shape `(N, D)`): the target projections of the other view, row i of the same image.

    Returns:
        `torch.Tensor` (scalar) in [0, 4]: the mean over the N samples. Use `byol_loss(p1, z2) + byol_loss(p2, z1)`
        for BYOL's symmetric loss (eq. 3).
    """
    _check_pair("byol_loss", predictions, targets, ("predictions", "targets"))
    cosine = F.cosine_similarity(predictions, targets, dim=1, eps=1e-12)
    return (2.0 - 2.0 * cosine).mean()


def simsiam_loss(predictions: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
    """SimSiam's `D(p, z) = -cos(p, stopgrad(z))`, averaged over the N samples (Chen & He 2021, eq. 1-2): the gradient
    reaches `predictions` only, never `projections` (the stop-gradient is inside the loss).

    Args:
        predictions (`torch.Tensor` of shape `(N, D)`): the predictor outputs p of one view.
        projections (`torch.Tensor` of shape `(N, D)`): the projector outputs z of the other view, row i of the same
            image.

    Returns:
        `torch.Tensor` (scalar) in [-1, 1]: the mean negative cosine. Use `(simsiam_loss(p1, z2) +
        simsiam_loss(p2, z1)) / 2` for SimSiam's symmetric loss (minimum -1).
    """
    _check_pair("simsiam_loss", predictions, projections, ("predictions", "projections"))
    return -F.cosine_similarity(predictions, projections.detach(), dim=1, eps=1e-12).mean()

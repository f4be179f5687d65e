"""SwAV's swapped-prediction loss and its Sinkhorn-Knopp codes (Caron et al. 2020, "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments", NeurIPS; reference code main_swav.py).

Legend: V crops (the first 2 are the global ones whose codes are computed), B batch, K prototypes, W world size.

The codes q of a crop are an equipartitioned soft assignment of the batch to the prototypes, computed without
gradient by a few Sinkhorn-Knopp iterations on exp(scores / epsilon) (all sums over the batch all-reduced, so the
partition is over the global batch); every other crop v predicts them through softmax(scores_v / temperature).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hfssl.distributed import is_distributed, world_size
from hfssl.losses.dino import _at_least_float32


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=op)
    return tensor


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Equipartitioned soft codes of a batch, as main_swav.py's `distributed_sinkhorn`.

    Q = exp(scores / epsilon)^T (K x B, the global maximum subtracted first, which cancels in the normalisation),
    normalised to sum 1; then `iterations` times: rows to 1/K each (row sums all-reduced over processes), columns to
    1/B_global each; finally columns scaled to sum 1.

    Args:
        scores (`torch.Tensor` of shape `(B, K)`): this process's prototype scores (cosines); B must be equal on all
            processes.
        epsilon (`float`, defaults to 0.05): the entropic regularisation (SwAV: 0.05; 0.03 in some configs).
        iterations (`int`, defaults to 3): Sinkhorn iterations (SwAV: 3).

    Returns:
        `torch.Tensor` of shape `(B, K)`, float32 or wider: the codes of this process's rows; each row sums to 1 and,
        over the global batch, each prototype receives B_global / K.
    """
    if scores.ndim != 2:
        raise ValueError(f"sinkhorn_knopp expects scores of shape (B, K); received {tuple(scores.shape)}.")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"epsilon={epsilon} must be > 0 and iterations={iterations} >= 1 (SwAV: 0.05 and 3).")
    scores = _at_least_float32(scores.detach())
    maximum = _all_reduce(scores.max().clone(), dist.ReduceOp.MAX)
    q = torch.exp((scores - maximum) / epsilon).t()  # (K, B)
    num_prototypes, global_batch = q.shape[0], q.shape[1] * world_size()
    tiny = torch.finfo(q.dtype).tiny  # a prototype or sample whose weights all underflow stays 0 instead of NaN
    q /= _all_reduce(q.sum())
    for _ in range(iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True)).clamp_min(tiny)  # each prototype: total weight 1 / K
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True).clamp_min(tiny)  # each sample: total weight 1 / B
        q /= global_batch
    q *= global_batch  # columns sum to 1: an assignment per sample
    return q.t()


def swav_loss(
    scores_per_crop: Sequence[torch.Tensor] | torch.Tensor,
    codes_per_global_crop: Sequence[torch.Tensor] | torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """SwAV's swapped prediction, as main_swav.py: for each global crop i with codes q_i, the mean over the other
    V - 1 crops v of mean_b -sum_k q_i log softmax(scores_v / temperature); then the mean over the global crops.

    Args:
        scores_per_crop (`torch.Tensor` of shape `(V, B, K)` or list of V `(B, K)`): prototype scores of every crop,
            the global crops first (crop i of the codes is crop i here).
        codes_per_global_crop (`torch.Tensor` of shape `(G, B, K)` or list of G `(B, K)`): the Sinkhorn codes
            (treated as constants).
        temperature (`float`, defaults to 0.1): SwAV's temperature.

    Returns:
        `torch.Tensor` (scalar), in nats (ln K for uniform predictions).
    """
    scores = scores_per_crop if isinstance(scores_per_crop, torch.Tensor) else torch.stack(list(scores_per_crop))
    codes = codes_per_global_crop
    codes = codes if isinstance(codes, torch.Tensor) else torch.stack(list(codes))
    if scores.ndim != 3 or codes.ndim != 3 or scores.shape[1:] != codes.shape[1:] or codes.shape[0] > scores.shape[0]:
        raise ValueError(
            f"swav_loss expects scores (V, B, K) and codes (G, B, K) with G <= V; received {tuple(scores.shape)} "
            f"and {tuple(codes.shape)}."
        )
    if scores.shape[0] < 2:
        raise ValueError(f"swav_loss needs at least 2 crops; received V={scores.shape[0]}.")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (SwAV uses 0.1).")
    num_global, num_crops = codes.shape[0], scores.shape[0]
    log_probabilities = F.log_softmax(_at_least_float32(scores) / temperature, dim=-1)  # (V, B, K)
    with torch.autocast(scores.device.type, enabled=False):  # float32 even under autocast
        codes = codes.detach().to(log_probabilities.dtype)
        cross_entropy = -torch.einsum("gbk,vbk->gv", codes, log_probabilities) / scores.shape[1]
    pairs = ~torch.eye(num_global, num_crops, dtype=torch.bool, device=scores.device)
    return (cross_entropy * pairs).sum() / (num_global * (num_crops - 1))


class SwAVLoss(nn.Module):
    """SwAV's codes and swapped prediction in one module holding their settings; no state (the prototypes and the
    queue belong to the model).

    Args:
        temperature (`float`, defaults to 0.1): of the predicted assignments (SwAV: 0.1).
        sinkhorn_epsilon (`float`, defaults to 0.05): the codes' entropic regularisation (SwAV: 0.05).
        sinkhorn_iterations (`int`, defaults to 3): Sinkhorn-Knopp iterations (SwAV: 3).
        num_global_crops (`int`, defaults to 2): G, the leading crops whose codes are computed.

    Shapes: `forward(scores_per_crop (V, B, K) or list of V (B, K), codes_per_global_crop (G, B, K) = None)` ->
    scalar. Without codes, they are `sinkhorn_knopp` of the first G crops' scores (all-reduced across processes);
    pass codes computed with a queue's scores prepended (as `SwAVModel` does) to use them instead.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        num_global_crops: int = 2,
    ) -> None:
        super().__init__()
        if temperature <= 0 or sinkhorn_epsilon <= 0 or sinkhorn_iterations < 1 or num_global_crops < 1:
            raise ValueError(
                f"SwAVLoss needs temperature > 0, sinkhorn_epsilon > 0, sinkhorn_iterations >= 1 and num_global_crops "
                f">= 1; got {temperature}, {sinkhorn_epsilon}, {sinkhorn_iterations} and {num_global_crops} (SwAV: "
                "0.1, 0.05, 3 and 2)."
            )
        self.temperature, self.num_global_crops = temperature, num_global_crops
        self.sinkhorn_epsilon, self.sinkhorn_iterations = sinkhorn_epsilon, sinkhorn_iterations

    @torch.no_grad()
    def codes(self, scores_per_crop: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """The Sinkhorn codes of the first G crops: `torch.Tensor` of shape `(G, B, K)`, no gradient."""
        crops = list(scores_per_crop)
        if len(crops) < self.num_global_crops:
            raise ValueError(
                f"SwAVLoss has num_global_crops={self.num_global_crops} but received {len(crops)} crops; pass the "
                "global crops' scores first, or build it with a smaller num_global_crops."
            )
        return torch.stack([
            sinkhorn_knopp(scores, self.sinkhorn_epsilon, self.sinkhorn_iterations)
            for scores in crops[: self.num_global_crops]
        ])

    def forward(
        self,
        scores_per_crop: Sequence[torch.Tensor] | torch.Tensor,
        codes_per_global_crop: Sequence[torch.Tensor] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`swav_loss` of the crops' scores against the codes (by default `codes`): a scalar, in nats."""
        if codes_per_global_crop is None:
            codes_per_global_crop = self.codes(scores_per_crop)
        return swav_loss(scores_per_crop, codes_per_global_crop, self.temperature)

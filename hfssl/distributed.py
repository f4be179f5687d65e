"""Cross-process communication for SSL losses; the single place hfssl talks between processes.

Legend: B local batch, W world size.

On one process (or without an initialised `torch.distributed` process group) every function is a no-op, so the
same model code runs under `python`, `accelerate launch` and `torchrun`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """The rank of this process (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 keeping the autograd graph (gradients flow back to each process's slice).

    Uses `torch.distributed.nn.functional.all_gather`, whose backward sums the gradients from every process
    (a reduce-scatter), which is what a loss over the global batch needs (SimCLR's global negatives, MoCo v3's keys).

    Args:
        tensor (`torch.Tensor` of shape `(B, ...)`): this process's slice; B must be equal on all processes.

    Returns:
        `torch.Tensor` of shape `(W * B, ...)`: the slices of all processes in rank order (`tensor` itself on one
        process).
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 without gradients (MoCo's keys before they enter the queue).

    Args:
        tensor (`torch.Tensor` of shape `(B, ...)`): this process's slice.

    Returns:
        `torch.Tensor` of shape `(W * B, ...)`: the slices of all processes in rank order.
    """
    if not is_distributed():
        return tensor
    slices = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(slices, tensor.contiguous())
    return torch.cat(slices, dim=0)


def other_processes(gathered: torch.Tensor, local_size: int) -> torch.Tensor | None:
    """The rows of a gathered tensor that belong to the other processes (None on one process).

    Args:
        gathered (`torch.Tensor` of shape `(W * B, ...)`): the output of `gather_with_grad` or `gather_no_grad`.
        local_size (`int`): B.

    Returns:
        `torch.Tensor` of shape `((W - 1) * B, ...)`, or `None` when W is 1.
    """
    if not is_distributed():
        return None
    start = rank() * local_size
    return torch.cat([gathered[:start], gathered[start + local_size :]], dim=0)

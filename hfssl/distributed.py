"""Cross-process communication for SSL losses; the single place hfssl talks between processes.

Legend: B local batch, W world size.

On one process (or without an initialised `torch.distributed` process group) every function is a no-op, so the
same model code runs under `python`, `accelerate launch` and `torchrun`.

How the gradients come out exact: a loss with in-batch negatives on process r, L_r, depends on every process's
embeddings through `gather_with_grad`, whose backward sums the gradients of all processes' losses into each slice.
Each process then holds d(sum_r L_r)/d(its parameters via its slice), and DDP's (or `average_gradients`') mean over
the W processes gives d((1/W) sum_r L_r)/d(parameters): the gradient of the global-batch loss, the mean over all
W * B anchors. Everything communicated goes through `torch.distributed` collectives.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

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


def end_processes() -> None:
    """Wait for every process, then destroy the process group; call it once, at the end of a script that succeeded.

    Without it, gloo's worker threads can be torn down during interpreter shutdown, and a process that already
    finished its work aborts ("terminate called without an active exception", pytorch/pytorch#190489), so
    `torchrun` reports the run as failed. After an exception it is not called: destroying a group while another
    process still waits in a collective would hang. A no-op without a process group.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 keeping the autograd graph: the backward (a reduce-scatter) sums every process's
    gradients into its slice, as a loss over the global batch needs (SimCLR's global negatives, MoCo v3's keys).

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


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the processes (one all-reduce of the flattened gradients), in place.

    What DDP does during `backward`, for the steps that back-propagate outside DDP's forward (the cached-gradient
    step of `hfssl.losses.grad_cache`). A no-op on one process.

    Args:
        parameters (iterable of `torch.nn.Parameter`): the parameters whose `.grad` to average; those without a
            gradient are skipped, so they must be the same on every process.
    """
    if not is_distributed():
        return
    gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not gradients:
        return
    flat = torch.cat([gradient.reshape(-1) for gradient in gradients])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for gradient, averaged in zip(gradients, flat.split([gradient.numel() for gradient in gradients])):
        gradient.copy_(averaged.view_as(gradient))


def average_across_processes(values: dict[str, float]) -> dict[str, float]:
    """The mean over processes of each named scalar (a name missing on some processes is averaged over the others).

    Used for the metrics `SSLTrainer` logs, which every process records on its own slice of the batch. Every process
    must call it (it is a collective); a no-op on one process.

    Args:
        values (`dict[str, float]`): this process's values.

    Returns:
        `dict[str, float]`: the same names (plus any other process's), each the mean over the processes having it.
    """
    if not is_distributed():
        return values
    gathered: list[dict[str, float]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, values)
    names = sorted({name for process_values in gathered for name in process_values})
    return {name: sum(v[name] for v in gathered if name in v) / sum(name in v for v in gathered) for name in names}


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """Turn every BatchNorm layer (torch's and timm's `BatchNormAct2d`) into a `torch.nn.SyncBatchNorm`, in place,
    so that batch statistics are those of the global batch, as SimCLR (global BN) and MoCo v3 (SyncBN) train.

    Args:
        model (`torch.nn.Module`): the model; teacher copies are converted too (their statistics are then global).
        device (`torch.device` or `str`): the training device; torch's SyncBatchNorm has no CPU kernel.

    Returns:
        `torch.nn.Module`: `model` with SyncBatchNorm layers (the same parameters, so optimisers and EMA pairs hold).

    Raises:
        `ValueError`: on a CPU device with several processes.
    """
    if torch.device(device).type == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "sync_batchnorm=True needs GPUs (or another accelerator): torch.nn.SyncBatchNorm has no CPU kernel, and "
            f"this run has {os.environ['WORLD_SIZE']} processes on CPU. On CPU, set sync_batchnorm=False (each "
            "process then normalises with its own batch's statistics), or train on GPUs."
        )
    from timm.layers import convert_sync_batchnorm as timm_convert_sync_batchnorm

    return timm_convert_sync_batchnorm(model)


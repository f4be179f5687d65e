"""Cached-gradient contrastive training: the exact gradient of a large batch in the memory of a chunk (GradCache,
Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", RepL4NLP).

Legend: N examples in the batch, n in a chunk, P embedding dim, V views stacked in front (any leading dims).

Gradient accumulation does not add negatives: every micro-batch only contrasts against itself. GradCache splits the
step at the embeddings instead:
1. embed every chunk without building a graph, remembering the random state before each chunk;
2. compute the loss on all N embeddings at once (they are cheap: N x P) and back-propagate it to the embeddings only,
   which gives the cached gradient dL/de for every example;
3. embed each chunk again, with its graph and the same random state (identical dropout masks), and back-propagate
   the cached gradient of that chunk: the parameter gradients sum to exactly dL/dtheta of the full batch.
Peak activation memory is that of one chunk, at the cost of a second forward pass. BatchNorm sees chunk statistics
(and updates its running statistics twice per step): the gradient is exact for chunk-normalised embeddings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.checkpoint import get_device_states, set_device_states


def tensors_of(chunk: Any) -> list[torch.Tensor]:
    """The tensors inside a chunk (a tensor, or a list / tuple / dict of them), whose devices carry random state."""
    if isinstance(chunk, torch.Tensor):
        return [chunk]
    if isinstance(chunk, dict):
        chunk = list(chunk.values())
    if isinstance(chunk, (list, tuple)):
        return [tensor for item in chunk for tensor in tensors_of(item)]
    return []


class RandomState:
    """The CPU random state and that of the accelerators a chunk lives on, to replay a forward pass identically."""

    def __init__(self, chunk: Any) -> None:
        self.cpu_state = torch.get_rng_state()
        self.devices, self.device_states = get_device_states(*tensors_of(chunk))

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """A context in which the random state is the captured one; the state outside is restored on exit."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu_state)
            set_device_states(self.devices, self.device_states)
            yield


def cached_gradient_backward(
    embed: Callable[[Any], torch.Tensor],
    loss_from_embeddings: Callable[[torch.Tensor], Any],
    chunks: Sequence[Any],
    backward: Callable[[torch.Tensor], None] | None = None,
    dim: int = 0,
) -> Any:
    """Back-propagate a loss over the embeddings of all chunks, one chunk's graph at a time (GradCache).

    After the call every parameter reached by `embed` or `loss_from_embeddings` holds (added to its `.grad`) the
    gradient of the loss of the whole batch, exactly as `backward(loss_from_embeddings(cat(embed(c) for c in chunks)))`
    would give, when `embed` is deterministic given the random state.

    Args:
        embed (`Callable`): chunk -> `torch.Tensor` with gradient, the chunk's embeddings (e.g. `(V, n, P)`).
        loss_from_embeddings (`Callable`): `torch.Tensor` of all embeddings (the chunks' concatenated along `dim`) ->
            a scalar loss tensor, or an output with a `loss` attribute (`SSLModelOutput`), returned as is. It may
            gather across processes and use parameters of its own (a learnable temperature).
        chunks (`Sequence`): the inputs of `embed`, e.g. lists of views of `n` images each.
        backward (`Callable`, *optional*): how to back-propagate the loss (e.g. `accelerator.backward`, which scales
            it for mixed precision); defaults to `loss.backward()`. The scale reaches the parameters through the cached
            embedding gradients.
        dim (`int`, defaults to 0): the dimension along which chunks' embeddings concatenate (1 for `(V, n, P)`).

    Returns:
        What `loss_from_embeddings` returned, its loss detached from the (freed) graph.
    """
    if len(chunks) == 0:
        raise ValueError("cached_gradient_backward needs at least one chunk; received an empty sequence.")
    states, cached = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(chunk))
            cached.append(embed(chunk))
    sizes = [embedding.shape[dim] for embedding in cached]
    embeddings = torch.cat(cached, dim=dim).requires_grad_(True)
    output = loss_from_embeddings(embeddings)
    loss = output if isinstance(output, torch.Tensor) else output.loss
    (backward or torch.Tensor.backward)(loss)
    if embeddings.grad is None:
        raise ValueError("loss_from_embeddings returned a loss that does not depend on the embeddings it was given.")
    for chunk, state, gradient in zip(chunks, states, embeddings.grad.split(sizes, dim=dim)):
        with state.replay():
            chunk_embeddings = embed(chunk)
        chunk_embeddings.backward(gradient)
    if isinstance(output, torch.Tensor):
        return output.detach()
    output.loss = loss.detach()
    return output

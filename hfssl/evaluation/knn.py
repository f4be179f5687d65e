"""Weighted k-nearest-neighbour classification on features, the SSL evaluation of InstDisc (Wu et al. 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination") and DINO (Caron et al. 2021).

Legend: N memory (train) features, Q queries, D feature dim, C classes.

Each query votes for the classes of its k most cosine-similar memory features, weighted by `exp(similarity /
temperature)`; the default k=200 is InstDisc's (DINO reports 20 too), and temperature 0.1 is the kNN monitor of
MoCo's reference demo (InstDisc and DINO use 0.07).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def check_neighbour_count(k: int, memory_size: int) -> bool:
    """Warn and return False when `k >= memory_size` (else return True): k is then capped at the memory size, so
    every query votes over the whole memory set, no longer a nearest-neighbour vote (k=200 over a few hundred images).
    """
    if k < memory_size:
        return True
    logger.warning(
        "kNN with k=%d neighbours over %d memory images: k >= the number of images, so every query votes over the "
        "whole memory set and the score says little about neighbourhoods. Pass a smaller k (DINO also reports k=20; "
        "e.g. --k 20 or knn_k=20) or use more training images.",
        k, memory_size,
    )  # fmt: skip
    return False


@torch.no_grad()
def knn_predict(
    memory_features: torch.Tensor, memory_labels: torch.Tensor, query_features: torch.Tensor,
    num_classes: int | None = None, k: int = 200, temperature: float = 0.1, chunk_size: int = 128,
    memory_chunk_size: int = 65536,
) -> torch.Tensor:
    """Class scores (Q, C), the summed vote weights of each class, of weighted kNN with cosine similarity, vectorised
    over chunks of queries.

    Exact: each (query chunk, memory chunk) similarity block keeps its own top k (found through the maxima of groups
    of columns, see `_block_topk`), and the top k of those candidates is the top k over the whole memory.

    Args:
        memory_features (`torch.Tensor` of shape `(N, D)`): the labelled memory bank (normalised here).
        memory_labels (`torch.Tensor` of shape `(N,)`): integer labels in `[0, C)`.
        query_features (`torch.Tensor` of shape `(Q, D)`): the features to classify.
        num_classes (`int`, *optional*): C; `memory_labels.max() + 1` when omitted.
        k (`int`, defaults to 200): neighbours (capped at N).
        temperature (`float`, defaults to 0.1): the vote weight is `exp(cosine / temperature)`.
        chunk_size (`int`, defaults to 128): queries per similarity block.
        memory_chunk_size (`int`, defaults to 65536): memory rows per similarity block (memory use is bounded by
            `chunk_size * memory_chunk_size` similarities, 32 MB at the defaults).
    """
    same_d = memory_features.ndim == query_features.ndim == 2 and memory_features.shape[1] == query_features.shape[1]
    if not same_d or memory_labels.shape != memory_features.shape[:1]:
        raise ValueError(
            "knn_predict expects memory (N, D), memory_labels (N,) and queries (Q, D) with the same N and the same D; "
            f"got {tuple(memory_features.shape)}, {tuple(memory_labels.shape)} and {tuple(query_features.shape)}."
        )
    if k < 1 or temperature <= 0:
        raise ValueError(f"knn_predict needs k >= 1 and temperature > 0; got k={k}, temperature={temperature}.")
    if chunk_size < 1 or memory_chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} and memory_chunk_size={memory_chunk_size} must be >= 1.")
    num_classes = num_classes if num_classes is not None else int(memory_labels.max()) + 1
    if query_features.shape[0] == 0:
        return torch.zeros(0, num_classes, device=memory_features.device)
    memory = F.normalize(memory_features.float(), dim=1)
    labels = memory_labels.long().to(memory.device)
    k = min(k, memory.shape[0])
    # One similarity buffer reused for every block: a fresh (q, m) tensor per block costs more in page faults than
    # the matrix product itself on a CPU.
    buffer = torch.empty(min(chunk_size, query_features.shape[0]) * min(memory_chunk_size, memory.shape[0]),
                         device=memory.device)
    scores = []
    for queries in F.normalize(query_features.float(), dim=1).split(chunk_size):
        queries = queries.to(memory.device)
        candidates, candidate_index = [], []
        for start in range(0, memory.shape[0], memory_chunk_size):
            rows = memory[start : start + memory_chunk_size]
            block = buffer[: queries.shape[0] * rows.shape[0]].view(queries.shape[0], rows.shape[0])
            torch.mm(queries, rows.T, out=block)  # (q, m)
            value, index = _block_topk(block, k)
            candidates.append(value)
            candidate_index.append(index + start)
        similarity, position = torch.cat(candidates, dim=1).topk(k, dim=1)  # (q, k)
        index = torch.cat(candidate_index, dim=1).gather(1, position)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(queries.shape[0], num_classes, device=memory.device)
        scores.append(votes.scatter_add_(1, labels[index], weights))
    return torch.cat(scores)


def _block_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values of each row of `block` (q, m) and their columns, in no particular order.

    Exact, and cheaper than one top-k over m columns: the row is cut into groups of g columns (g up to 32), and only
    the k groups with the largest maxima can hold a top-k value (at most k groups have a maximum >= the k-th largest
    value), so the top k is taken over those k * g values.
    """
    rows, width = block.shape
    k = min(k, width)
    size = 32  # group size: the largest power of two up to 32 that leaves at least 4k groups
    while size >= 4 and width < 4 * k * size:
        size //= 2
    if size < 4:  # too few groups for the two-stage search to pay
        return block.topk(k, dim=1, sorted=False)
    full = width // size * size
    group_max = block[:, :full].view(rows, -1, size).amax(dim=2)
    group = group_max.topk(k, dim=1, sorted=False).indices  # (q, k)
    columns = (group.unsqueeze(2) * size + torch.arange(size, device=block.device)).view(rows, -1)
    if full < width:  # the ragged tail joins the candidates
        tail = torch.arange(full, width, device=block.device).expand(rows, -1)
        columns = torch.cat([columns, tail], dim=1)
    value, position = block.gather(1, columns).topk(k, dim=1, sorted=False)
    return value, columns.gather(1, position)


@torch.no_grad()
def knn_accuracy(
    memory_features: torch.Tensor, memory_labels: torch.Tensor, query_features: torch.Tensor,
    query_labels: torch.Tensor, k: int = 200, temperature: float = 0.1, chunk_size: int = 128,
    memory_chunk_size: int = 65536,
) -> float:
    """Top-1 accuracy (in [0, 1]) of `knn_predict` on labelled queries (Q,)."""
    num_classes = int(max(memory_labels.max(), query_labels.max())) + 1
    scores = knn_predict(
        memory_features, memory_labels, query_features, num_classes, k, temperature, chunk_size, memory_chunk_size
    )
    return (scores.argmax(dim=1).cpu() == query_labels.cpu()).float().mean().item()

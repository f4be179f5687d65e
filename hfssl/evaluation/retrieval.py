"""Retrieval scores for sentence embeddings on pairs built offline from any text.

Each held-out paragraph is cut into two halves; the first half is the query and the second half
its only relevant document among all second halves. A sentence encoder that captures topic puts
the two halves of a paragraph closer than halves of other paragraphs. Scores: recall@k and the
mean reciprocal rank (MRR), with cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def split_into_halves(texts: Sequence[str], min_words: int = 16) -> tuple[list[str], list[str]]:
    """Cut every text of at least `min_words` words into a first and a second half (by words).

    Returns:
        `(queries, documents)`: lists of the same length, `documents[i]` is the other half of `queries[i]`.
    """
    queries, documents = [], []
    for text in texts:
        words = text.split()
        if len(words) >= min_words:
            middle = len(words) // 2
            queries.append(" ".join(words[:middle]))
            documents.append(" ".join(words[middle:]))
    if len(queries) < 2:
        raise ValueError(f"Need at least 2 texts of >= {min_words} words to make retrieval pairs, got {len(queries)}.")
    return queries, documents


@torch.no_grad()
def pair_retrieval_scores(
    encode: Callable[[list[str]], torch.Tensor], queries: Sequence[str], documents: Sequence[str],
    ks: Sequence[int] = (1, 5), batch_size: int = 128,
) -> dict[str, float]:
    """Recall@k and MRR of retrieving `documents[i]` for `queries[i]` among all documents.

    Args:
        encode (`Callable`): maps a list of strings to embeddings of shape (n, D).
        queries, documents (`Sequence[str]`): aligned pairs.
    """
    if len(queries) != len(documents):
        raise ValueError(f"Got {len(queries)} queries but {len(documents)} documents; they must be aligned pairs.")

    def embed(texts: Sequence[str]) -> torch.Tensor:
        chunks = [encode(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return torch.nn.functional.normalize(torch.cat(chunks).float(), dim=1)

    similarity = embed(queries) @ embed(documents).T
    correct = similarity.diagonal()[:, None]
    ranks = (similarity > correct).sum(1) + 1  # 1 = the right document is the most similar
    scores = {f"recall@{k}": float((ranks <= k).float().mean()) for k in ks}
    scores["mrr"] = float((1.0 / ranks.float()).mean())
    return scores

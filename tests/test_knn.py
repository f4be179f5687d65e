"""Weighted kNN against a per-query loop."""

import math

import pytest
import torch
import torch.nn.functional as F

from hfssl.evaluation.knn import knn_accuracy, knn_predict


def test_knn_predict_matches_a_per_query_loop():
    generator = torch.Generator().manual_seed(0)
    memory, labels = torch.randn(50, 6, generator=generator), torch.randint(0, 4, (50,), generator=generator)
    queries = torch.randn(7, 6, generator=generator)
    scores = knn_predict(memory, labels, queries, num_classes=4, k=5, temperature=0.1, chunk_size=3)
    for row, query in enumerate(queries):
        cosine = F.cosine_similarity(query[None], memory, dim=1)
        expected = torch.zeros(4)
        for index in cosine.argsort(descending=True)[:5]:
            expected[labels[index]] += math.exp(cosine[index].item() / 0.1)
        torch.testing.assert_close(scores[row], expected, rtol=1e-4, atol=1e-4)


def test_knn_accuracy_on_separable_clusters_and_errors():
    centers = torch.eye(3) * 10
    memory = centers.repeat_interleave(20, 0) + torch.randn(60, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(3).repeat_interleave(20)
    assert knn_accuracy(memory, labels, centers, torch.arange(3), k=200) == 1.0
    with pytest.raises(ValueError, match="same D"):
        knn_predict(memory, labels, torch.randn(2, 4))

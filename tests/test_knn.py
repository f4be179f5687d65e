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


@pytest.mark.parametrize("k", [1, 7, 500])
def test_knn_predictions_equal_a_brute_force_reference(k):
    generator = torch.Generator().manual_seed(k)
    memory, labels = torch.randn(300, 16, generator=generator), torch.randint(0, 5, (300,), generator=generator)
    queries = torch.randn(80, 16, generator=generator)
    predictions = knn_predict(memory, labels, queries, num_classes=5, k=k, temperature=0.07, chunk_size=32).argmax(1)
    expected = []
    for query in queries.double():  # float64, every memory item, one query at a time
        cosine = [(query @ item / (query.norm() * item.norm())).item() for item in memory.double()]
        neighbours = sorted(range(len(memory)), key=lambda index: -cosine[index])[:k]
        votes = [0.0] * 5
        for index in neighbours:
            votes[int(labels[index])] += math.exp(cosine[index] / 0.07)
        expected.append(max(range(5), key=lambda label: votes[label]))
    assert predictions.tolist() == expected


def test_dataset_features_reads_the_backbone_data_config():
    from transformers import ViTConfig

    from hfssl.data.images import load_digits_dataset
    from hfssl.evaluation.features import dataset_features, extract_features
    from hfssl.models.backbone import Backbone

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16,
                       patch_size=8)
    backbone = Backbone(config=config)
    digits = load_digits_dataset(image_size=16).select(range(10))
    features, labels = dataset_features(backbone, digits, batch_size=4)
    expected = extract_features(backbone, digits["image"], 16, backbone.data_config["mean"], backbone.data_config["std"])
    torch.testing.assert_close(features, expected)
    assert features.shape == (10, 32) and labels.tolist() == digits["label"]
    with pytest.raises(ValueError, match="needs an 'image' column"):
        dataset_features(backbone, digits.rename_column("image", "picture"))

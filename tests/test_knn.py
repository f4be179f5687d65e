"""Weighted kNN against a per-query loop and a brute-force reference; feature extraction split across processes."""

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import MEAN, STD, tiny_vit_config
from hfssl.evaluation.features import dataset_features, knn_evaluate
from hfssl.evaluation.knn import check_neighbour_count, knn_accuracy, knn_predict


def test_knn_predict_matches_a_per_query_loop():
    generator = torch.Generator().manual_seed(0)
    memory, labels = torch.randn(50, 6, generator=generator), torch.randint(0, 4, (50,), generator=generator)
    queries = torch.randn(7, 6, generator=generator)
    scores = knn_predict(memory, labels, queries, num_classes=4, k=5, temperature=0.1, chunk_size=3, memory_chunk_size=8)
    # Memory in blocks of 8 rows (the last one of 2, fewer than k) gives the same scores as one block.
    torch.testing.assert_close(scores, knn_predict(memory, labels, queries, 4, 5, 0.1, chunk_size=7, memory_chunk_size=50))
    for row, query in enumerate(queries):
        cosine = F.cosine_similarity(query[None], memory, dim=1)
        expected = torch.zeros(4)
        for index in cosine.argsort(descending=True)[:5]:
            expected[labels[index]] += math.exp(cosine[index].item() / 0.1)
        torch.testing.assert_close(scores[row], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3, 10, 40])  # groups of 32, 32, 32 and 8
def test_grouped_block_topk_equals_a_full_topk(k):
    from hfssl.evaluation.knn import _block_topk

    generator = torch.Generator().manual_seed(k)
    # 1,300 columns: 40 groups of 32 and a ragged tail of 20; rounded values give many ties.
    block = (torch.randn(64, 1300, generator=generator) * 4).round()
    block[0, 1290:] = 100.0  # the whole top k of one row in the tail
    block[1, :] = 1.0  # every value tied
    value, column = _block_topk(block, k)
    assert value.shape == column.shape == (64, k)
    expected = block.topk(k, dim=1).values
    torch.testing.assert_close(value.sort(dim=1, descending=True).values, expected)
    torch.testing.assert_close(block.gather(1, column), value)  # the columns hold those values
    assert all(len(set(row.tolist())) == k for row in column)  # no column twice


def test_knn_predict_over_wide_blocks_matches_a_per_query_loop():
    generator = torch.Generator().manual_seed(3)
    memory, labels = torch.randn(5000, 8, generator=generator), torch.randint(0, 6, (5000,), generator=generator)
    queries = torch.randn(40, 8, generator=generator)
    scores = knn_predict(memory, labels, queries, num_classes=6, k=20, temperature=0.1, chunk_size=16)
    cosine = F.normalize(queries.double(), dim=1) @ F.normalize(memory.double(), dim=1).T
    top = cosine.topk(20, dim=1)
    expected = torch.zeros(40, 6, dtype=torch.float64).scatter_add_(1, labels[top.indices], (top.values / 0.1).exp())
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-3)


def test_knn_accuracy_on_separable_clusters_and_errors():
    centers = torch.eye(3) * 10
    memory = centers.repeat_interleave(20, 0) + torch.randn(60, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(3).repeat_interleave(20)
    assert knn_accuracy(memory, labels, centers, torch.arange(3), k=200) == 1.0
    assert knn_predict(memory, labels, torch.zeros(0, 3), num_classes=3).shape == (0, 3)  # no queries, no error
    with pytest.raises(ValueError, match="same D"):
        knn_predict(memory, labels, torch.randn(2, 4))
    with pytest.raises(ValueError, match="memory_chunk_size=0 must be >= 1"):
        knn_predict(memory, labels, centers, memory_chunk_size=0)


@pytest.mark.parametrize("k", [1, 7, 500])
def test_knn_predictions_equal_a_brute_force_reference(k):
    generator = torch.Generator().manual_seed(k)
    memory, labels = torch.randn(300, 16, generator=generator), torch.randint(0, 5, (300,), generator=generator)
    queries = torch.randn(80, 16, generator=generator)
    predictions = knn_predict(
        memory, labels, queries, num_classes=5, k=k, temperature=0.07, chunk_size=32, memory_chunk_size=64
    ).argmax(1)
    expected = []
    for query in queries.double():  # float64, every memory item, one query at a time
        cosine = [(query @ item / (query.norm() * item.norm())).item() for item in memory.double()]
        neighbours = sorted(range(len(memory)), key=lambda index: -cosine[index])[:k]
        votes = [0.0] * 5
        for index in neighbours:
            votes[int(labels[index])] += math.exp(cosine[index] / 0.07)
        expected.append(max(range(5), key=lambda label: votes[label]))
    assert predictions.tolist() == expected


def test_dataset_features_reads_the_backbone_data_config(digits):
    from hfssl.evaluation.features import dataset_features, extract_features
    from hfssl.models.backbone import Backbone

    torch.manual_seed(0)
    backbone = Backbone(config=tiny_vit_config())
    digits = digits.select(range(10))
    features, labels = dataset_features(backbone, digits, batch_size=4)
    expected = extract_features(backbone, digits["image"], 16, backbone.data_config["mean"], backbone.data_config["std"])
    torch.testing.assert_close(features, expected)
    assert features.shape == (10, 32) and labels.tolist() == digits["label"]
    with pytest.raises(ValueError, match="needs an 'image' column"):
        dataset_features(backbone, digits.rename_column("image", "picture"))


def test_images_of_different_sizes_are_resized_one_by_one_and_read_a_batch_at_a_time():
    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature
    from PIL import Image

    from hfssl.evaluation.features import extract_features, images_to_tensor

    rng = np.random.default_rng(0)
    shapes = [(20, 20, 3), (12, 16, 3), (16, 16), (30, 9, 3), (16, 16, 3)]  # as in any real image folder
    images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in shapes]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    dataset = Dataset.from_dict({"image": images, "label": [0, 1, 0, 1, 0]}, features=features)
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    mean, std = (0.5,) * 3, (0.25,) * 3

    resized_first = torch.cat([images_to_tensor([image], 16) for image in images])  # one image at a time
    assert resized_first.shape == (5, 3, 16, 16)
    assert torch.equal(images_to_tensor(images, 16), resized_first)
    got = extract_features(encoder, dataset, 16, mean, std, batch_size=2)
    with torch.no_grad():
        expected = encoder((resized_first - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert got.shape == (5, 4)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(dataset_features(encoder, dataset, 16, mean, std, batch_size=3)[0], expected)
    # its kNN is that of the features computed by hand, with the dataset's labels (the bounds that can fail are in
    # test_knn_evaluate_scores_an_informative_encoder_high_and_a_constant_one_at_chance)
    labels = torch.tensor(dataset["label"])
    assert knn_evaluate(encoder, dataset, dataset, 16, mean, std, k=3) == knn_accuracy(expected, labels, expected, labels, 3)

    # A dataset is decoded batch_size rows at a time, never the whole column at once.
    batch_sizes = []

    def record(batch: dict) -> dict:
        batch_sizes.append(len(batch["image"]))
        return batch

    lazy = extract_features(encoder, dataset.with_transform(record), 16, mean, std, batch_size=2)
    torch.testing.assert_close(lazy, expected)
    assert batch_sizes == [2, 2, 1]

    # Same-size images: exactly the one batched resize as before.
    arrays = [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(3)]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    batch = F.interpolate(batch, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(images_to_tensor(arrays, 16), batch)


class PixelProjection(nn.Module):
    """Informative by construction: a fixed random projection (B, 3 * 16 * 16) -> (B, 64) of the flattened pixels.
    Random projections keep distances (Johnson-Lindenstrauss), so kNN on them is about kNN on the pixels."""

    def __init__(self) -> None:
        super().__init__()
        weight = torch.randn(3 * 16 * 16, 64, generator=torch.Generator().manual_seed(0))
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight


class ConstantEncoder(nn.Module):
    """Uninformative by construction: the same feature vector for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.ones(8), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.value.expand(images.shape[0], -1)


def test_knn_evaluate_scores_an_informative_encoder_high_and_a_constant_one_at_chance(digits_train):
    """Bounds that can fail: kNN on (a projection of) the pixels classifies digits well (measured 0.95 on these 100
    queries), so knn_evaluate losing the link between an image, its features and its label drops it to chance (about
    0.1); a constant encoder gives every query the same class, so it scores that class's share of the queries (0.13
    at most here), and anything above it means labels leak into the prediction."""
    memory, queries = digits_train.select(range(300)), digits_train.select(range(300, 400))
    informative = knn_evaluate(PixelProjection(), memory, queries, 16, MEAN, STD, k=5)
    constant = knn_evaluate(ConstantEncoder(), memory, queries, 16, MEAN, STD, k=5)
    assert informative > 0.8 and constant < 0.25


@pytest.mark.slow
def test_feature_extraction_is_split_between_processes_and_gathered_in_order(tmp_path):
    world_size = 2  # 37 images: shards of 19 and 18 (uneven; 2 processes keep the test quick on 2 cores)
    path = os.path.join(os.path.dirname(__file__), "features_distributed_worker.py")
    spec = importlib.util.spec_from_file_location("features_distributed_worker", path)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}", path,
               str(tmp_path)]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU everywhere
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=environment)
    if completed.returncode != 0 and "terminate called without an active exception" in completed.stderr:
        completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]

    encoder = worker.CountingEncoder()  # one process, the whole dataset
    want, want_labels = dataset_features(encoder, worker.dataset(), batch_size=5)
    want_knn = knn_evaluate(encoder, worker.dataset(), worker.dataset().select(range(10)), worker.IMAGE_SIZE, (0.5,) * 3,
                            (0.25,) * 3, k=3)  # fmt: skip
    per_process = -(-worker.COUNT // world_size)
    seen = []
    for rank in range(world_size):
        got = torch.load(tmp_path / f"features_rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["features"], want, rtol=0, atol=1e-5)
        assert torch.equal(got["labels"], want_labels) and got["knn"] == want_knn
        seen.append(got["seen"])
    # Each process embedded its own contiguous shard only: 1/W of the work.
    assert seen == [min(per_process, worker.COUNT - rank * per_process) for rank in range(world_size)]
    assert sum(seen) == worker.COUNT


def test_a_k_not_below_the_memory_size_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="hfssl.evaluation.knn"):
        assert check_neighbour_count(20, 160)
        assert not caplog.text
        assert not check_neighbour_count(200, 160)
    assert "k=200 neighbours over 160 memory images" in caplog.text and "Pass a smaller k" in caplog.text

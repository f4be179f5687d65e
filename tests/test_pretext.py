"""Pretext collators (rotation, jigsaw, colorization): labels checked by inverting them, statistics, heads in Trainer."""

import itertools
import math

import numpy as np
import pytest
import timm
import torch
from datasets import Dataset, Features, Image as ImageFeature
from PIL import Image
from transformers import Trainer, TrainingArguments

from hfssl.augmentations.photometric import lab_to_rgb
from hfssl.collators.pretext import DataCollatorForColorization, DataCollatorForJigsaw, DataCollatorForRotation, maximal_hamming_permutations
from hfssl.models.pretext_heads import ColorizationHead, JigsawHead, RotationPredictionHead


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine they oversubscribe it
    (a resnet18 step went from 0.1 s to 4 s): use one thread in this module, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RNG = np.random.default_rng(0)
ARRAYS = [RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(5)]
EXAMPLES = [{"image": Image.fromarray(a), "label": 7} for a in ARRAYS]
NO_AUG = dict(crop_scale=(1.0, 1.0), flip_p=0.0)  # a square image of the output size is then returned exactly


def as_float(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def test_rotation_all_four_labels_invert():
    collator = DataCollatorForRotation(image_size=24, mean=(0, 0, 0), std=(1, 1, 1), **NO_AUG)
    batch = collator(EXAMPLES)
    assert batch["pixel_values"].shape == (20, 3, 24, 24) and batch["labels"].tolist() == [0, 1, 2, 3] * 5
    for row, (image, label) in enumerate(zip(batch["pixel_values"], batch["labels"])):
        torch.testing.assert_close(torch.rot90(image, -int(label), dims=(1, 2)), as_float(ARRAYS[row // 4]))
    # label 1 is a counter-clockwise quarter turn: the top-right corner moves to the top-left
    torch.testing.assert_close(batch["pixel_values"][1][:, 0, 0], as_float(ARRAYS[0])[:, 0, -1])


def test_rotation_one_random_rotation_per_image_is_uniform_and_inverts():
    n = 2000
    examples = [{"image": torch.from_numpy(ARRAYS[0]).permute(2, 0, 1)}] * n
    batch = DataCollatorForRotation(image_size=24, all_rotations=False, mean=(0, 0, 0), std=(1, 1, 1), seed=0, **NO_AUG)(examples)
    assert batch["pixel_values"].shape == (n, 3, 24, 24)
    for image, label in zip(batch["pixel_values"][:20], batch["labels"][:20]):
        torch.testing.assert_close(torch.rot90(image, -int(label), dims=(1, 2)), as_float(ARRAYS[0]))
    counts = torch.bincount(batch["labels"], minlength=4).float()
    assert (counts - n / 4).abs().max() <= 5 * math.sqrt(n * 0.25 * 0.75)  # binomial 5 sigma per class


def test_hamming_permutation_set():
    permutations = maximal_hamming_permutations(30)
    assert permutations.shape == (30, 9) and len({tuple(p.tolist()) for p in permutations}) == 30
    assert all(sorted(p.tolist()) == list(range(9)) for p in permutations)
    distances = (permutations[:, None] != permutations[None]).sum(-1) + 9 * torch.eye(30, dtype=torch.long)
    random_set = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(i)) for i in range(30)])
    random_distances = (random_set[:, None] != random_set[None]).sum(-1) + 9 * torch.eye(30, dtype=torch.long)
    assert distances.min() >= 7 and distances.min() > random_distances.min()
    assert torch.equal(maximal_hamming_permutations(30), permutations)  # deterministic for a seed


def test_hamming_permutations_are_the_greedy_max_min_choice():
    # the docstring's rule against a naive loop over the 5! permutations in lexicographic order
    chosen = maximal_hamming_permutations(12, num_tiles=5, seed=3).tolist()
    candidates = [list(p) for p in itertools.permutations(range(5))]
    expected = [chosen[0]]  # the random start
    for _ in range(11):
        distance = lambda p: min(sum(a != b for a, b in zip(p, q)) for q in expected)  # noqa: E731
        best = max(distance(p) for p in candidates)
        expected.append(next(p for p in candidates if distance(p) == best))
    assert chosen == expected


def test_jigsaw_permutation_labels_invert_to_the_image():
    collator = DataCollatorForJigsaw(image_size=24, grid=3, num_permutations=20, per_tile_normalization=False, mean=(0, 0, 0), std=(1, 1, 1), seed=0, **NO_AUG)
    batch = collator(EXAMPLES)
    tiles, labels = batch["pixel_values"], batch["labels"]
    assert tiles.shape == (5, 9, 3, 8, 8) and labels.shape == (5,)
    for b in range(5):
        ordered = tiles[b][collator.permutations[labels[b]].argsort()]  # undo the shuffle
        image = ordered.view(3, 3, 3, 8, 8).permute(2, 0, 3, 1, 4).reshape(3, 24, 24)
        torch.testing.assert_close(image, as_float(ARRAYS[b]))


def test_jigsaw_tile_jitter_normalization_and_label_statistics():
    n = 3000
    collator = DataCollatorForJigsaw(image_size=24, num_permutations=4, tile_jitter=2, seed=0)
    batch = collator([{"image": ARRAYS[0]}] * n)
    assert batch["pixel_values"].shape == (n, 9, 3, 6, 6) and collator.tile_size == 6
    per_tile = batch["pixel_values"].flatten(2)
    torch.testing.assert_close(per_tile.mean(-1), torch.zeros(n, 9), atol=1e-5, rtol=0)
    counts = torch.bincount(batch["labels"], minlength=4).float()
    assert (counts - n / 4).abs().max() <= 5 * math.sqrt(n * 0.25 * 0.75)
    # jitter: the same puzzle position is cut at different offsets across samples
    same_label = batch["pixel_values"][batch["labels"] == 0][:, 0]
    assert len({tuple(tile.flatten().tolist()) for tile in same_label[:50]}) > 1
    with pytest.raises(ValueError, match="tile_jitter=8 smaller than the cell side 8"):
        DataCollatorForJigsaw(image_size=24, tile_jitter=8)


@pytest.mark.parametrize("target", ["lab", "rgb"])
def test_colorization_target_reconstructs_the_colours(target):
    batch = DataCollatorForColorization(image_size=24, target=target, channels=3, **NO_AUG)(EXAMPLES)
    pixels, labels = batch["pixel_values"], batch["labels"]
    assert pixels.shape == (5, 3, 24, 24) and torch.equal(pixels[:, 0], pixels[:, 2])
    expected = torch.stack([as_float(a) for a in ARRAYS])
    if target == "lab":
        assert labels.shape == (5, 2, 24, 24) and labels.abs().max() <= 1.0
        rgb = lab_to_rgb(torch.cat([(pixels[:, :1] + 1) * 50, labels * 110], 1))
        torch.testing.assert_close(rgb, expected, atol=1e-4, rtol=0)
    else:
        torch.testing.assert_close(labels, expected)
        torch.testing.assert_close((pixels[:, 0] + 1) / 2, (expected * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1))
    with pytest.raises(ValueError, match="target='yuv' is not supported"):
        DataCollatorForColorization(target="yuv")


def small_cnn(out: int = 16) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, out, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(out, out, 3, stride=2, padding=1))


@pytest.mark.parametrize("task", ["rotation", "jigsaw", "colorization"])
def test_heads_train_inside_a_trainer(tmp_path, task):
    images = [Image.fromarray(RNG.integers(0, 256, (30, 30, 3), dtype=np.uint8)) for _ in range(12)]
    dataset = Dataset.from_dict({"image": images}, features=Features({"image": ImageFeature()}))
    if task == "rotation":
        model = RotationPredictionHead(timm.create_model("resnet18", pretrained=False, num_classes=0), num_features=512)
        collator = DataCollatorForRotation(image_size=32, crop_scale=(0.5, 1.0), seed=0)
    elif task == "jigsaw":
        model = JigsawHead(small_cnn(), num_features=16, num_permutations=10, hidden_size=32)
        collator = DataCollatorForJigsaw(image_size=24, num_permutations=10, tile_jitter=1, seed=0)
    else:
        model = ColorizationHead(small_cnn(), num_features=16, out_channels=2)
        collator = DataCollatorForColorization(image_size=16, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2 if task == "rotation" else 4, learning_rate=1e-2, remove_unused_columns=False, report_to=[], save_strategy="no", use_cpu=True)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    moved = [name for name, p in model.named_parameters() if not torch.equal(before[name], p)]
    assert len(moved) >= len(before) - 2  # every trainable tensor moved (BatchNorm-free nets; resnet bn too)

"""DataCollatorForMaskedImageModeling: exact counts, ViTMAE/ViT/BEiT agreement, block and SimMIM statistics."""

import math
import random

import numpy as np
import pytest
import torch
from scipy import ndimage
from datasets import Dataset, Features, Image as ImageFeature
from PIL import Image
from transformers import (
    BeitConfig,
    BeitForMaskedImageModeling,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForMaskedImageModeling,
    ViTMAEConfig,
    ViTMAEForPreTraining,
)

from hfssl.collators.masked_image import DataCollatorForMaskedImageModeling, block_mask, random_patch_mask, simmim_mask


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine they oversubscribe it
    (a resnet18 step went from 0.1 s to 4 s): use one thread in this module, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RNG = np.random.default_rng(0)
EXAMPLES = [{"image": Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "label": i} for i in range(6)]


def tiny_vit_mae(mask_ratio: float = 0.75) -> ViTMAEForPreTraining:
    config = ViTMAEConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
        mask_ratio=mask_ratio,
    )
    return ViTMAEForPreTraining(config).eval()


@pytest.mark.parametrize("num_patches,ratio", [(16, 0.75), (49, 0.75), (196, 0.6), (64, 0.5), (10, 0.33)])
def test_random_masking_masks_exactly_round_ratio_patches(num_patches, ratio):
    noise, mask, ids_restore = random_patch_mask(50, num_patches, round(ratio * num_patches), torch.Generator().manual_seed(0))
    assert (mask.sum(1) == round(ratio * num_patches)).all()
    assert noise.shape == mask.shape == ids_restore.shape == (50, num_patches) and mask.dtype == torch.bool


def test_vit_mae_given_our_noise_chooses_our_mask():
    model = tiny_vit_mae()
    collator = DataCollatorForMaskedImageModeling.from_model_config(model.config, return_bool_masked_pos=True, seed=0)
    batch = collator(EXAMPLES)
    assert batch["pixel_values"].shape == (6, 3, 32, 32) and batch["noise"].shape == (6, 16)
    with torch.no_grad():
        output = model(pixel_values=batch["pixel_values"], noise=batch["noise"])
    assert torch.equal(output.mask.bool(), batch["bool_masked_pos"])
    # ids_restore too: the same as ViTMAE's own random_masking on the same noise
    _, _, ids_restore = model.vit.embeddings.random_masking(torch.zeros(6, 16, 1), batch["noise"])
    noise_again, _, ours = random_patch_mask(6, 16, 12, torch.Generator().manual_seed(1))
    _, model_mask, theirs = model.vit.embeddings.random_masking(torch.zeros(6, 16, 1), noise_again)
    assert torch.equal(ours, theirs) and torch.equal(model_mask.bool(), ours >= 4)


def test_mask_ratio_disagreeing_with_vit_mae_is_refused():
    model = tiny_vit_mae(mask_ratio=0.9)  # ViTMAE keeps int(16 * 0.1) = 1 patch, round(0.9 * 16) = 14 masked
    with pytest.raises(ValueError, match="masks 15 of 16 patches but the collator masks round"):
        DataCollatorForMaskedImageModeling.from_model_config(model.config)


@pytest.mark.parametrize("masking", ["random", "block"])
def test_a_ratio_rounding_to_every_patch_is_refused(masking):
    with pytest.raises(ValueError, match=r"mask_ratio=0.99 of 16 patches rounds to 16: every patch masked"):
        DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, mask_ratio=0.99, masking=masking,
                                           min_num_patches=4)  # fmt: skip
    assert DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, mask_ratio=0.9).num_masked == 14


def test_bool_masked_pos_drives_vit_and_beit():
    vit = ViTForMaskedImageModeling(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, encoder_stride=8)).eval()
    collator = DataCollatorForMaskedImageModeling.from_model_config(vit.config, mask_ratio=0.5, seed=0)
    batch = collator(EXAMPLES)
    assert set(batch) == {"pixel_values", "bool_masked_pos"} and (batch["bool_masked_pos"].sum(1) == 8).all()
    with torch.no_grad():
        embedded = vit.vit.embeddings(batch["pixel_values"], bool_masked_pos=batch["bool_masked_pos"])[:, 1:]
        plain = vit.vit.embeddings(batch["pixel_values"])[:, 1:]
    changed = (embedded != plain).any(-1)  # masked patches were replaced by the mask token, the others were not
    assert torch.equal(changed, batch["bool_masked_pos"])
    with torch.no_grad():
        output = vit(pixel_values=batch["pixel_values"], bool_masked_pos=batch["bool_masked_pos"])
    assert output.reconstruction.shape == (6, 3, 32, 32) and torch.isfinite(output.loss)
    beit = BeitForMaskedImageModeling(BeitConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50, use_mask_token=True)).eval()
    block = DataCollatorForMaskedImageModeling.from_model_config(beit.config, masking="block", mask_ratio=0.4, min_num_patches=2, seed=0)
    batch = block(EXAMPLES)
    with torch.no_grad():
        logits = beit(pixel_values=batch["pixel_values"], bool_masked_pos=batch["bool_masked_pos"]).logits
    assert logits.shape == (6, 16, 50)


def beit_reference(height: int, width: int, num_masked: int, min_num_patches: int, min_aspect: float, rng: random.Random) -> np.ndarray:
    """BEiT's MaskingGenerator, per image, as in the BEiT repository."""
    mask = np.zeros((height, width), dtype=int)
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    count = 0
    while count < num_masked:
        budget, delta = num_masked - count, 0
        for _ in range(10):
            target = rng.uniform(min_num_patches, budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                top, left = rng.randint(0, height - h), rng.randint(0, width - w)
                new = h * w - mask[top : top + h, left : left + w].sum()
                if 0 < new <= budget:
                    mask[top : top + h, left : left + w] = 1
                    delta = new
                if delta > 0:
                    break
        if delta == 0:
            break
        count += delta
    return mask


def test_block_masking_matches_the_per_image_algorithm_statistics():
    n, grid, num_masked = 400, (14, 14), 75  # BEiT: 40% of 196 patches, blocks >= 16 patches, aspect in [0.3, 1/0.3]
    ours = block_mask(n, grid, num_masked, 16, None, 0.3, torch.Generator().manual_seed(0)).float()
    rng = random.Random(0)
    reference = torch.tensor(np.stack([beit_reference(*grid, num_masked, 16, 0.3, rng).ravel() for _ in range(n)])).float()
    assert (ours.sum(1) <= num_masked).all()
    regions = lambda m: torch.tensor([float(ndimage.label(mask)[1]) for mask in m.view(n, *grid).numpy()])  # noqa: E731
    # count, centre coverage, number of 4-connected masked regions (how the blocks are laid out)
    for statistic in (lambda m: m.sum(1), lambda m: m.view(n, *grid)[:, 6:8, 6:8].sum((1, 2)), regions):
        a, b = statistic(ours), statistic(reference)
        # two-sample test on the means: 5 standard errors of the difference
        assert abs(a.mean() - b.mean()) <= 5 * math.sqrt(a.var() / n + b.var() / n)
    # per-patch masking frequency, pooled: centre patches are masked more often than corners in both
    assert ours.mean(0).view(grid)[6, 6] > ours.mean(0).view(grid)[0, 0]


def test_simmim_mask_granularity_and_count():
    mask = simmim_mask(20, 192, 4, 32, 0.6, torch.Generator().manual_seed(0)).view(20, 48, 48)
    assert (mask.sum((1, 2)) == math.ceil(0.6 * 36) * 64).all()
    cells = mask.view(20, 6, 8, 6, 8)
    assert (cells.all(2).all(3) | ~cells.any(2).any(3)).all()  # each 32 px cell is fully masked or fully visible
    with pytest.raises(ValueError, match="divisible by mask_patch_size"):
        simmim_mask(1, 192, 4, 30, 0.6)


def test_simmim_refuses_fewer_than_two_cells_per_side_or_every_cell_masked():
    # one 32 px cell on a 32 px image: ceil(0.6 * 1) = 1 cell, every patch masked
    with pytest.raises(ValueError, match=r"image_size=32 and mask_patch_size=32 has 1x1 mask cells .* leaving 0 visible; use a smaller mask_patch_size .*e\.g\. 16"):
        DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, masking="simmim", mask_ratio=0.6)
    with pytest.raises(ValueError, match="has 1x1 mask cells"):
        simmim_mask(2, 32, 8, 32, 0.6)
    # 2x2 cells, ceil(0.8 * 4) = 4: all masked too
    with pytest.raises(ValueError, match=r"2x2 mask cells .* ceil\(mask_ratio=0\.8 \* 4\) = 4 would be masked.*or a lower mask_ratio"):
        DataCollatorForMaskedImageModeling(image_size=64, patch_size=8, masking="simmim", mask_patch_size=32, mask_ratio=0.8)
    with pytest.raises(ValueError, match="a larger image_size or a smaller patch_size"):  # no smaller cell size exists
        simmim_mask(1, 8, 8, 8, 0.5)
    collator = DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, masking="simmim", mask_patch_size=16, mask_ratio=0.6, seed=0)
    mask = collator(EXAMPLES)["bool_masked_pos"]
    assert (mask.sum(1) == math.ceil(0.6 * 4) * 4).all() and not mask.all(1).any()


@pytest.mark.parametrize(
    "image_size,mask_ratio,min_num_patches,refused",
    [(24, 0.75, 16, True), (32, 0.75, 16, True), (32, 0.4, 16, True), (16, 0.75, 4, True), (24, 0.75, 2, False),
     (16, 0.5, 1, False), (32, 0.75, 4, False), (112, 0.4, 16, False)],
)  # fmt: skip
def test_block_masking_refuses_grids_where_no_block_of_min_num_patches_fits(image_size, mask_ratio, min_num_patches, refused):
    # BEiT keeps only rectangles with h < side and w < side: at most (side - 1)^2 patches
    kwargs = dict(image_size=image_size, patch_size=8, masking="block", mask_ratio=mask_ratio, min_num_patches=min_num_patches)
    side = image_size // 8
    if refused:
        with pytest.raises(ValueError, match=rf"masking='block' would give empty masks: .* below the {side}x{side} patch grid"):
            DataCollatorForMaskedImageModeling(**kwargs)
    else:
        masks = DataCollatorForMaskedImageModeling(**kwargs).mask(200, torch.Generator().manual_seed(0))[0]
        assert masks.any(1).float().mean() >= 0.9


def test_block_masking_refusal_says_what_to_do():
    # what the check spares: every mask empty on a 3x3 grid, nearly every one on a 4x4 grid (blocks >= 16 patches)
    assert not block_mask(200, (3, 3), 7, 16, None, 0.3, torch.Generator().manual_seed(0)).any()
    assert block_mask(200, (4, 4), 12, 16, None, 0.3, torch.Generator().manual_seed(0)).any(1).float().mean() <= 0.1
    with pytest.raises(ValueError, match=r"blocks of at least min_num_patches=16 patches need both sides below the 4x4 patch grid's \(image_size=32, patch_size=8\), where at most 9 fit; lower min_num_patches to at most 9"):
        DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, masking="block")
    with pytest.raises(ValueError, match=r"where at most 0 fit; use more patches per side"):
        DataCollatorForMaskedImageModeling(image_size=8, patch_size=8, masking="block", min_num_patches=1)
    with pytest.raises(ValueError, match=r"mask_ratio=0.0 must be in \(0, 1\)"):  # nothing to mask: refused, NaN loss
        DataCollatorForMaskedImageModeling(image_size=24, patch_size=8, masking="block", mask_ratio=0.0)


def test_block_min_aspect_above_one_reads_as_its_inverse_like_beit_and_non_positive_is_refused():
    for bad in (0.0, -0.5):
        with pytest.raises(ValueError, match=f"min_aspect={bad} must be > 0"):
            DataCollatorForMaskedImageModeling(masking="block", min_aspect=bad)
        with pytest.raises(ValueError, match=f"min_aspect={bad} must be > 0"):
            block_mask(2, (14, 14), 78, 16, None, bad)
    # the same range [0.5, 2]: the same masks from the same seed
    inverted = block_mask(300, (14, 14), 75, 16, None, 2.0, torch.Generator().manual_seed(0))
    assert torch.equal(inverted, block_mask(300, (14, 14), 75, 16, None, 0.5, torch.Generator().manual_seed(0)))
    # and the statistics of BEiT's own generator given min_aspect=2 (its log aspect range then runs from log 2 to log 0.5)
    n, grid = 300, (14, 14)
    rng = random.Random(2)
    reference = torch.tensor(np.stack([beit_reference(*grid, 75, 16, 2.0, rng).ravel() for _ in range(n)])).float()
    for statistic in (lambda m: m.sum(1), lambda m: m.view(n, *grid)[:, 6:8, 6:8].sum((1, 2))):
        a, b = statistic(inverted.float()), statistic(reference)
        assert abs(a.mean() - b.mean()) <= 5 * math.sqrt(a.var() / n + b.var() / n)


def test_dataset_labels_are_dropped_and_other_columns_pass_through():
    examples = [dict(example, id=i, labels=i % 2) for i, example in enumerate(EXAMPLES)]  # both `label` and `labels`
    for masking in ("random", "block", "simmim"):
        collator = DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, masking=masking, mask_patch_size=16, min_num_patches=2, seed=0)
        batch = collator(examples)
        assert "labels" not in batch and "label" not in batch and batch["id"].tolist() == list(range(6))


def test_each_patch_is_masked_with_probability_ratio():
    n, patches, masked = 4000, 16, 12
    _, mask, _ = random_patch_mask(n, patches, masked, torch.Generator().manual_seed(0))
    p = masked / patches
    assert (mask.float().mean(0) - p).abs().max() <= 5 * math.sqrt(p * (1 - p) / n)


def test_seeded_and_not_mutating():
    first = DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, seed=3)(EXAMPLES)
    second = DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, seed=3)(EXAMPLES)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert set(EXAMPLES[0]) == {"image", "label"}


def test_user_errors_say_what_to_do():
    with pytest.raises(ValueError, match="masking='grid' is not supported"):
        DataCollatorForMaskedImageModeling(masking="grid")
    with pytest.raises(ValueError, match="image_size=30 is not a multiple of patch_size=8"):
        DataCollatorForMaskedImageModeling(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="must have 1 or channels=1 values"):
        DataCollatorForMaskedImageModeling(channels=1)
    with pytest.raises(ValueError, match="return_noise=True needs masking='random'"):
        DataCollatorForMaskedImageModeling(masking="block", return_noise=True)


@pytest.mark.parametrize("kind", ["vit_mae", "vit"])
def test_inside_a_trainer_with_an_image_dataset(tmp_path, kind):
    images = [Image.fromarray(RNG.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(16)]
    dataset = Dataset.from_dict({"image": images}, features=Features({"image": ImageFeature()}))
    if kind == "vit_mae":
        model = tiny_vit_mae().train()
    else:
        model = ViTForMaskedImageModeling(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, encoder_stride=8))
    collator = DataCollatorForMaskedImageModeling.from_model_config(model.config, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-2, remove_unused_columns=False, report_to=[], save_strategy="no", use_cpu=True)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    moved = [name for name, p in model.named_parameters() if name in before and not torch.equal(before[name], p)]
    assert len(moved) > len(before) // 2

"""Masks per second: hfssl's random masking against the mask-and-index part of ViTMAE's `random_masking`, hfssl's
BEiT block-wise masking against BEiT's per-image algorithm as written in the BEiT repository, and both against
what a BEiT training step consumes.

    python bench/mae_mask.py          # ViT-B/16 at 224 px: 196 patches; MAE ratio 0.75, BEiT 78 patches (40%)

Random masking: both produce the same outputs from the same noise (noise, binary mask, restore indices; checked).
Block-wise: both follow BEiT's MaskingGenerator (min 16 patches per block, aspect in [0.3, 1/0.3], 10 attempts);
the mask statistics of both over 2,000 masks are printed to show they agree: mean masked count, mean number of
connected masked regions (4-connectivity), mean masked fraction of the central 2x2 patches. Timings alternate
hfssl and the reference in each repeat (the machine may be shared), median of --repeats; torch uses 1 thread.
A training step: `BeitForMaskedImageModeling` at BEiT-base size (ViT-B/16, 224 px, random weights), forward,
backward and AdamW step on --step_batch_size images with block masks, on this machine's CPU (all its cores),
median of --step_repeats after a warm-up step (0 skips it); `block_masks_per_step_image` is how many times
faster one process makes block masks than such a step consumes them. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hfssl.collators.masked_image import block_mask, random_patch_mask  # noqa: E402


def vit_mae_mask_and_index(noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mask-and-index lines of transformers' ViTMAEEmbeddings.random_masking (v5), noise drawn as there."""
    batch_size, seq_length = noise.shape
    len_keep = int(seq_length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones([batch_size, seq_length])
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return noise, mask, ids_restore


def beit_per_image(height: int, width: int, num_masked: int, min_num_patches: int, min_aspect: float, rng: random.Random) -> np.ndarray:
    """BEiT's MaskingGenerator for one image, written out as in the BEiT repository (masking_generator.py)."""
    mask = np.zeros((height, width), dtype=np.int64)
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
                    delta += new
                if delta > 0:
                    break
        if delta == 0:
            break
        count += delta
    return mask


def run_times(function, repeats: int) -> list[float]:
    """Seconds of `repeats` calls of `function`, after a warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def rate(function, count: int, repeats: int) -> float:
    return count / statistics.median(run_times(function, repeats))


def paired_rates(first, second, count: int, repeats: int) -> tuple[float, float]:
    """Masks/s of two functions making `count` masks, timed alternately (median of `repeats`) after a warm-up."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, record in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            function()
            record.append(time.perf_counter() - start)
    return count / statistics.median(times[0]), count / statistics.median(times[1])


def step_images_per_second(batch_size: int, repeats: int, masks: torch.Tensor) -> float:
    """Images/s of BEiT-base masked-image-modelling training steps (forward, backward, AdamW) on random images."""
    from transformers import BeitConfig, BeitForMaskedImageModeling

    model = BeitForMaskedImageModeling(BeitConfig(use_mask_token=True)).train()  # BEiT-base: ViT-B/16, 224 px
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixel_values = torch.randn(batch_size, 3, 224, 224)
    labels = torch.randint(0, model.config.vocab_size, (batch_size, masks.shape[1]))

    def step() -> None:
        loss = model(pixel_values=pixel_values, bool_masked_pos=masks[:batch_size], labels=labels[masks[:batch_size]]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return batch_size / statistics.median(run_times(step, repeats))


def block_statistics(masks: np.ndarray) -> dict[str, float]:
    """Mean masked count, mean number of 4-connected masked regions and central 2x2 coverage of (N, H, W) masks."""
    height, width = masks.shape[1:]
    centre = masks[:, height // 2 - 1 : height // 2 + 1, width // 2 - 1 : width // 2 + 1]
    return {
        "masked": float(masks.sum((1, 2)).mean()),
        "regions": float(np.mean([ndimage.label(mask)[1] for mask in masks])),
        "centre": float(centre.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_patches", type=int, default=196)
    parser.add_argument("--mask_ratio", type=float, default=0.75)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--step_batch_size", type=int, default=8)
    parser.add_argument("--step_repeats", type=int, default=3)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    batch, patches = args.batch_size, args.num_patches
    masked = round(args.mask_ratio * patches)
    generator = torch.Generator()

    noise, ours_mask, ours_restore = random_patch_mask(batch, patches, masked, generator.manual_seed(0))
    _, their_mask, their_restore = vit_mae_mask_and_index(noise, args.mask_ratio)
    if not (torch.equal(ours_mask, their_mask.bool()) and torch.equal(ours_restore, their_restore)):
        raise RuntimeError("hfssl's random masking and ViTMAE's disagree on the same noise")
    ours_random = rate(lambda: random_patch_mask(batch, patches, masked, generator), batch, args.repeats)
    theirs_random = rate(lambda: vit_mae_mask_and_index(torch.rand(batch, patches, generator=generator), args.mask_ratio), batch, args.repeats)

    side = math.isqrt(patches)
    block_count = round(0.4 * patches)
    rng = random.Random(0)
    ours_block, theirs_block = paired_rates(
        lambda: block_mask(batch, (side, side), block_count, 16, None, 0.3, generator),
        lambda: [beit_per_image(side, side, block_count, 16, 0.3, rng) for _ in range(batch)],
        batch, args.repeats,
    )
    ours = block_statistics(block_mask(2000, (side, side), block_count, 16, None, 0.3, generator.manual_seed(1)).view(-1, side, side).numpy())
    theirs = block_statistics(np.stack([beit_per_image(side, side, block_count, 16, 0.3, rng) for _ in range(2000)]))
    step: dict = {}
    if args.step_repeats > 0:
        torch.set_num_threads(threads)  # a training step uses every core
        masks = block_mask(args.step_batch_size, (side, side), block_count, 16, None, 0.3, generator)
        step_rate = step_images_per_second(args.step_batch_size, args.step_repeats, masks)
        step = {"step_batch_size": args.step_batch_size, "step_threads": threads, "beit_base_step_images_per_second": round(step_rate, 2),
                "block_masks_per_step_image": round(ours_block / step_rate), "random_masks_per_step_image": round(ours_random / step_rate)}
    print(json.dumps({
        "bench": "mae_mask", "batch_size": batch, "num_patches": patches, "unit": "masks/s",
        "hfssl_random": round(ours_random), "vit_mae_random_masking": round(theirs_random),
        "ratio_random": round(ours_random / theirs_random, 2),
        "hfssl_block": round(ours_block), "beit_per_image_loop": round(theirs_block), "ratio_block": round(ours_block / theirs_block, 2),
        "block_target": block_count,
        **{f"block_mean_{key}_hfssl": round(value, 3) for key, value in ours.items()},
        **{f"block_mean_{key}_per_image": round(value, 3) for key, value in theirs.items()},
        **step,
    }))


if __name__ == "__main__":
    main()

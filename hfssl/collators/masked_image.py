"""`DataCollatorForMaskedImageModeling`: images -> pixel values + patch masks for MAE ("random", He et al., 2021),
BEiT ("block", Bao et al., 2021) and SimMIM ("simmim", Xie et al., 2021).

Legend: B batch, L patches per image (grid_h * grid_w), C channels, S image side.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hfssl.augmentations.geometric import random_resized_crops
from hfssl.augmentations.image_io import collate_columns, decode_batch
from hfssl.augmentations.normalization import IMAGENET_MEAN, IMAGENET_STD
from hfssl.augmentations.seeding import WorkerSeededGenerator

logger = logging.getLogger(__name__)
MASKING_STRATEGIES = ("random", "block", "simmim")


def random_patch_mask(
    batch_size: int, num_patches: int, num_masked: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image uniform random masking of exactly `num_masked` patches, as MAE's `random_masking`.

    The patches with the `num_patches - num_masked` lowest noise values are kept, which is what
    `ViTMAEForPreTraining(pixel_values, noise=noise)` does when its `mask_ratio` keeps as many.

    Returns:
        noise (`torch.Tensor` of shape (B, L)): uniform in [0, 1).
        mask (`torch.Tensor` of shape (B, L)): bool, True = masked (removed).
        ids_restore (`torch.Tensor` of shape (B, L)): the rank of each patch's noise (ViTMAE's `ids_restore`).
    """
    noise = torch.rand(batch_size, num_patches, generator=generator)
    ids_shuffle = noise.argsort(dim=1)
    # the inverse permutation by one scatter instead of ViTMAE's second argsort
    ids_restore = torch.empty_like(ids_shuffle).scatter_(1, ids_shuffle, torch.arange(num_patches).expand(batch_size, -1))
    return noise, ids_restore >= num_patches - num_masked, ids_restore


def _log_aspect_range(min_aspect: float) -> tuple[float, float]:
    """BEiT's log aspect ratio range (log a, log(1 / a)), a = min(min_aspect, 1 / min_aspect): a min_aspect above 1
    gives the same range, as BEiT's `max_aspect = 1 / min_aspect` does."""
    if not min_aspect > 0:  # NaN too
        raise ValueError(
            f"min_aspect={min_aspect} must be > 0: block masking draws aspect ratios in [min_aspect, 1 / min_aspect] "
            "(BEiT: 0.3)."
        )
    low = min_aspect if min_aspect <= 1.0 else 1.0 / min_aspect
    return math.log(low), math.log(1.0 / low)


def _add_block(
    mask: np.ndarray, budget: int, min_num_patches: int, log_aspect: tuple[float, float], rng: random.Random
) -> int:
    """One step of BEiT's `MaskingGenerator._mask`: up to 10 rectangles of area uniform in [min_num_patches, budget],
    log aspect ratio uniform in `log_aspect`, at a uniform position; the first that fits (both sides below the grid's)
    and masks between 1 and `budget` new patches is masked. Returns the number of patches it added (0 if none did)."""
    height, width = mask.shape
    for _ in range(10):
        target_area = rng.uniform(min_num_patches, budget)
        aspect = math.exp(rng.uniform(*log_aspect))
        h, w = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if h < height and w < width:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            new = h * w - int(mask[top : top + h, left : left + w].sum())
            if 0 < new <= budget:
                mask[top : top + h, left : left + w] = True
                return new
    return 0


def block_mask(
    batch_size: int, grid: tuple[int, int], num_masked: int, min_num_patches: int = 16,
    max_num_patches: int | None = None, min_aspect: float = 0.3, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """BEiT's block-wise masking (Algorithm 1 of Bao et al., `MaskingGenerator` in the BEiT code), image by image:
    blocks (`_add_block`, with a budget of min(remaining, max_num_patches)) are added until `num_masked` patches are
    masked or a step adds none. The draws come from a Python `random.Random` seeded from `generator`.

    Returns:
        `torch.Tensor` of shape (B, grid_h * grid_w): bool, True = masked. At most `num_masked` per image.
    """
    log_aspect = _log_aspect_range(min_aspect)
    max_num_patches = num_masked if max_num_patches is None else max_num_patches
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
    masks = np.zeros((batch_size, *grid), dtype=bool)
    for mask in masks:
        count = 0
        while count < num_masked:
            added = _add_block(mask, min(num_masked - count, max_num_patches), min_num_patches, log_aspect, rng)
            if added == 0:
                break
            count += added
    return torch.from_numpy(masks.reshape(batch_size, -1))


def _simmim_cells(image_size: int, patch_size: int, mask_patch_size: int, mask_ratio: float) -> tuple[int, int]:
    """SimMIM's mask grid: (cells per side, masked cells = ceil(mask_ratio * cells)), refusing a grid of fewer than
    2 cells per side or one where every cell (so every patch) would be masked."""
    if image_size % mask_patch_size or mask_patch_size % patch_size:
        raise ValueError(
            f"SimMIM masking needs image_size ({image_size}) divisible by mask_patch_size ({mask_patch_size}) and "
            f"mask_patch_size divisible by patch_size ({patch_size}); change mask_patch_size."
        )
    cells_side = image_size // mask_patch_size
    num_masked = math.ceil(mask_ratio * cells_side**2)
    if cells_side < 2 or num_masked == cells_side**2:
        sides = {size: image_size // size for size in range(patch_size, min(mask_patch_size, image_size // 2 + 1), patch_size)}
        sizes = [size for size, side in sides.items() if image_size % size == 0 and math.ceil(mask_ratio * side**2) < side**2]
        fix = "a larger image_size or a smaller patch_size"
        if sizes:
            fix = f"a smaller mask_patch_size dividing image_size, a multiple of patch_size (e.g. {sizes[-1]})"
        raise ValueError(
            f"SimMIM masking with image_size={image_size} and mask_patch_size={mask_patch_size} has {cells_side}x{cells_side} "
            f"mask cells (at least 2x2 needed), of which ceil(mask_ratio={mask_ratio} * {cells_side**2}) = {num_masked} "
            f"would be masked, leaving {cells_side**2 - num_masked} visible; use {fix}, or a lower mask_ratio."
        )
    return cells_side, num_masked


def simmim_mask(
    batch_size: int, image_size: int, patch_size: int, mask_patch_size: int, mask_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SimMIM's mask (`MaskGenerator` in the SimMIM code): ceil(ratio * M) random cells of `mask_patch_size`
    pixels, each covering (mask_patch_size / patch_size)^2 model patches.

    Returns:
        `torch.Tensor` of shape (B, (image_size / patch_size)^2): bool, True = masked.
    """
    cells_side, num_masked = _simmim_cells(image_size, patch_size, mask_patch_size, mask_ratio)
    _, cells, _ = random_patch_mask(batch_size, cells_side**2, num_masked, generator)
    scale = mask_patch_size // patch_size
    cells = cells.view(batch_size, cells_side, cells_side)
    return cells.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2).flatten(1)


@dataclass
class DataCollatorForMaskedImageModeling:
    """Collate images into `pixel_values` and a per-image patch mask.

    Each image is random-resized-cropped (MAE: scale (0.2, 1)) and flipped, scaled to [0, 1] and normalised.
    Build it from a model config with `from_model_config` to read image, patch size, channels and mask ratio.

    Args:
        image_size (`int`): side S of the output image. patch_size (`int`): side of a model patch.
        mask_ratio (`float`): fraction of patches masked (MAE 0.75, BEiT 0.4, SimMIM 0.6), in (0, 1): the loss is
            over the masked patches, so at least one must be masked and one left visible. "random" and "block"
            mask round(mask_ratio * L) patches, "simmim" ceil(mask_ratio * M) of its M cells.
        masking (`str`): "random" (MAE), "block" (BEiT) or "simmim".
        mask_patch_size (`int`): SimMIM's masking cell side in pixels (32); at least 2 cells per side, and not
            every cell masked.
        min_num_patches, max_num_patches, min_aspect: BEiT block parameters (16, unlimited, 0.3). min_aspect must
            be > 0 (above 1 it reads as 1 / min_aspect, as in BEiT); a grid where no such rectangle fits is refused.
        crop_scale (`tuple[float, float]`): random resized crop area range; (1.0, 1.0) just resizes.
        flip_p (`float`): horizontal flip probability.
        mean, std (`tuple[float, ...]`): normalisation per channel (ImageNet's by default).
        channels (`int`): 3 (grayscale replicated) or 1.
        image_column (`str`): key of the image in each example; other columns pass through, except `label` /
            `labels`: the models take no class labels, and with a `labels` key Trainer takes their mean loss for a
            per-item sum.
        return_noise (`bool`, *optional*): output `noise` (B, L) for `ViTMAEForPreTraining`; default True for
            "random" masking. return_bool_masked_pos (`bool`): output `bool_masked_pos` (B, L) for
            `ViTForMaskedImageModeling`, BEiT, Swin/SimMIM.
        skip_invalid_images (`bool`), seed (`int`, *optional*): as `DataCollatorForMultiView`.

    Returns (from `__call__`):
        `dict` with `pixel_values` (B, C, S, S) float32, `bool_masked_pos` (B, L) bool and/or `noise` (B, L)
        float32, and the pass-through columns (not `label` / `labels`).
    """

    image_size: int = 224
    patch_size: int = 16
    mask_ratio: float = 0.75
    masking: str = "random"
    mask_patch_size: int = 32
    min_num_patches: int = 16
    max_num_patches: int | None = None
    min_aspect: float = 0.3
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip_p: float = 0.5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    image_column: str = "image"
    return_noise: bool | None = None
    return_bool_masked_pos: bool = True
    skip_invalid_images: bool = False
    seed: int | None = None
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.masking not in MASKING_STRATEGIES:
            raise ValueError(f"masking={self.masking!r} is not supported; use one of {MASKING_STRATEGIES}.")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} must be in (0, 1), e.g. 0.75 for MAE: the loss is over the masked "
                "patches only, so with none masked it is NaN, and with all masked the encoder sees nothing."
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}.")
        if len(self.mean) not in (1, self.channels) or len(self.std) not in (1, self.channels):
            raise ValueError(
                f"mean={self.mean} and std={self.std} must have 1 or channels={self.channels} values; "
                "pass per-channel statistics matching `channels`."
            )
        if self.return_noise is None:
            self.return_noise = self.masking == "random"
        if self.return_noise and self.masking != "random":
            raise ValueError(f"return_noise=True needs masking='random' (ViTMAE), got masking={self.masking!r}.")
        if self.masking == "simmim":
            _simmim_cells(self.image_size, self.patch_size, self.mask_patch_size, self.mask_ratio)
        if self.masking == "block":
            self._check_block_masks_can_be_non_empty()
        if self.masking in ("random", "block") and self.num_patches and self.num_masked == 0:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} of {self.num_patches} patches rounds to 0 masked patches: the loss is "
                f"over the masked patches only, so it would be NaN; raise mask_ratio to at least "
                f"{1 / self.num_patches:.3g} (e.g. 0.75 for MAE), or use more patches."
            )
        if self.masking in ("random", "block") and self.num_patches and self.num_masked >= self.num_patches:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} of {self.num_patches} patches rounds to {self.num_masked}: every patch "
                "masked, none left for the encoder; lower mask_ratio, or use more patches (a larger image_size or a "
                "smaller patch_size)."
            )
        self._rng = WorkerSeededGenerator(self.seed)

    def _check_block_masks_can_be_non_empty(self) -> None:
        """Refuse a min_aspect <= 0, and a grid where no block of min_num_patches fits: BEiT keeps only rectangles
        with both sides below the grid's, and the masks would be empty (or nearly: only rounding a block's target
        area down, or a budget below min_num_patches, lets a smaller rectangle through now and then)."""
        _log_aspect_range(self.min_aspect)
        side = self.image_size // self.patch_size
        if self.num_masked and (side - 1) ** 2 < self.min_num_patches:
            fix = f"lower min_num_patches to at most {(side - 1) ** 2}, or use" if side > 1 else "use"
            raise ValueError(
                f"masking='block' would give empty masks: BEiT's blocks of at least min_num_patches={self.min_num_patches} "
                f"patches need both sides below the {side}x{side} patch grid's (image_size={self.image_size}, "
                f"patch_size={self.patch_size}), where at most {(side - 1) ** 2} fit; {fix} more patches per side."
            )

    @classmethod
    def from_model_config(cls, config: Any, **kwargs: Any) -> DataCollatorForMaskedImageModeling:
        """Read image_size, patch_size, num_channels (and mask_ratio for ViTMAE) from a transformers config.

        For `model_type == "vit_mae"` the output is `pixel_values` + `noise` (what `ViTMAEForPreTraining`
        takes); otherwise `pixel_values` + `bool_masked_pos`. Keyword arguments override.
        """
        image_size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        patch_size = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        defaults: dict[str, Any] = {"image_size": image_size, "patch_size": patch_size}
        if getattr(config, "num_channels", 3) == 1:
            defaults.update(channels=1, mean=(0.5,), std=(0.5,))
        if getattr(config, "model_type", None) == "vit_mae":
            defaults.update(mask_ratio=config.mask_ratio, return_noise=True, return_bool_masked_pos=False)
        else:
            defaults.update(return_noise=False)
        defaults.update(kwargs)
        collator = cls(**defaults)
        if collator.return_noise and getattr(config, "model_type", None) == "vit_mae":
            patches = collator.num_patches
            model_masked = patches - int(patches * (1 - config.mask_ratio))
            if model_masked != collator.num_masked:
                raise ValueError(
                    f"ViTMAE with mask_ratio={config.mask_ratio} masks {model_masked} of {patches} patches but the collator "
                    f"masks round({collator.mask_ratio} * {patches}) = {collator.num_masked}; set the same mask_ratio on both, "
                    "or one for which both counts agree."
                )
        return collator

    @property
    def num_patches(self) -> int:
        """L = (image_size / patch_size)^2."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_masked(self) -> int:
        """round(mask_ratio * L) (random and block masking)."""
        return round(self.mask_ratio * self.num_patches)

    def mask(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw `bool_masked_pos` (B, L) and, for random masking, the matching ViTMAE `noise` (B, L)."""
        generator = generator if generator is not None else self._rng.get()
        if self.masking == "random":
            noise, mask, _ = random_patch_mask(batch_size, self.num_patches, self.num_masked, generator)
            return mask, noise
        if self.masking == "block":
            side = self.image_size // self.patch_size
            return block_mask(batch_size, (side, side), self.num_masked, self.min_num_patches, self.max_num_patches, self.min_aspect, generator), None
        return simmim_mask(batch_size, self.image_size, self.patch_size, self.mask_patch_size, self.mask_ratio, generator), None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        generator = self._rng.get()
        batch_images, sizes, kept = decode_batch(examples, self.image_column, self.channels, self.skip_invalid_images)
        if len(kept) < len(examples):
            logger.warning("skipped %d unreadable images in this batch", len(examples) - len(kept))
        crops = random_resized_crops(batch_images, sizes, self.image_size, self.crop_scale, (3 / 4, 4 / 3), self.flip_p, generator)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        batch = collate_columns([examples[i] for i in kept], exclude=(self.image_column, "label", "labels"))
        batch["pixel_values"] = (crops / 255.0 - mean) / std
        mask, noise = self.mask(len(kept), generator)
        if self.return_bool_masked_pos:
            batch["bool_masked_pos"] = mask
        if self.return_noise:
            batch["noise"] = noise
        return batch

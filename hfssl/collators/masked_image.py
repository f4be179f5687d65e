"""`DataCollatorForMaskedImageModeling`: images -> pixel values + patch masks for MAE, BEiT and SimMIM.

Three masking strategies, each vectorised over the batch:
- "random" (MAE, He et al., 2021): exactly round(mask_ratio * L) patches per image, uniformly at random.
  Also returns the `noise` that makes `ViTMAEForPreTraining` choose the very same mask.
- "block" (BEiT, Bao et al., 2021, Algorithm 1): rectangles of >= `min_num_patches` patches with aspect
  ratio in [min_aspect, 1 / min_aspect] until round(mask_ratio * L) patches are masked (BEiT: 0.4, 16, 0.3;
  a min_aspect above 1 gives the same range, as BEiT's `max_aspect = 1 / min_aspect` does).
- "simmim" (SimMIM, Xie et al., 2021): ceil(mask_ratio * M) masked cells of a coarser grid of
  `mask_patch_size` pixels (M cells), upsampled to the model's patches (SimMIM: 0.6 and 32 px).

Legend: B batch, L patches per image (grid_h * grid_w), C channels, S image side.
"""

from __future__ import annotations

import functools
import logging
import math
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


def _popcount(words: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 (numpy >= 2 has a ufunc for it; older numpy counts bytes)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return _BYTE_POPCOUNT[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1, dtype=np.uint8)


_BYTE_POPCOUNT = np.array([value.bit_count() for value in range(256)], dtype=np.uint8)


@functools.lru_cache(maxsize=16)
def _band_bits(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Patch sets as bits (patch l = row * width + col is bit l % 64 of word l // 64), for O(1)-op rectangles.

    Returns:
        rows (`np.ndarray` of shape (height * (height + 1), words)): entry top * (height + 1) + h holds rows
            top .. top + h - 1, all columns. cols (`np.ndarray` of shape (width * (width + 1), words)): entry
            left * (width + 1) + w holds columns left .. left + w - 1, all rows. A rectangle is rows & cols.
    """
    words = -(-height * width // 64)

    def bands(side: int, repeat: int, tile: bool) -> np.ndarray:
        index = np.arange(side)
        inside = (index >= index[:, None, None]) & (index < index[:, None, None] + np.arange(side + 1)[None, :, None])
        inside = np.tile(inside, (1, 1, repeat)) if tile else np.repeat(inside, repeat, axis=2)  # (side, side + 1, L)
        padded = np.zeros((side * (side + 1), words * 64), dtype=bool)
        padded[:, : height * width] = inside.reshape(side * (side + 1), height * width)
        return np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(np.uint64)

    return bands(height, width, tile=False), bands(width, height, tile=True)


@functools.lru_cache(maxsize=16)
def _band_table(height: int, width: int) -> np.ndarray:
    """`_band_bits`'s row and column bands as one table (rows first), words padded to a multiple of 4 (so the byte
    popcounts of a rectangle's words can be summed four at a time through a uint32 view)."""
    table = np.concatenate(_band_bits(height, width))
    pad = -table.shape[1] % 4
    return np.pad(table, ((0, 0), (0, pad))) if pad else table


@functools.lru_cache(maxsize=16)
def _band_ints(height: int, width: int) -> tuple[list[int], list[int]]:
    """`_band_bits` as Python ints (bit l = patch l), for the per-image rounds at the end of `block_mask`."""
    return tuple([int.from_bytes(band.astype("<u8").tobytes(), "little") for band in bands] for bands in _band_bits(height, width))


PYTHON_TAIL = 4  # `block_mask` finishes the last unfinished images one by one below this many (cheaper than a numpy round)


def _finish_per_image(
    mask: np.ndarray, ids: np.ndarray, count: np.ndarray, grid: tuple[int, int], num_masked: int, max_num_patches: int,
    min_num_patches: int, aspect_scale: float, aspect_shift: float, rng: np.random.Generator,
) -> None:
    """The rest of BEiT's algorithm for the images `ids` (masked `count` patches so far), one at a time, in place.

    The same rounds as `block_mask`'s (10 candidates, the first that fits and adds 1 .. remaining patches is kept),
    on Python ints as bit sets: for a handful of images this is faster than a round of numpy calls."""
    height, width = grid
    rows, cols = _band_ints(height, width)
    words = mask.shape[1]
    for image, done in zip(ids.tolist(), count.tolist()):
        bits = int.from_bytes(mask[image].astype("<u8").tobytes(), "little")
        while done < num_masked:
            budget = min(num_masked - done, max_num_patches)
            uniform = rng.random((10, 4), dtype=np.float32).tolist()
            added = 0
            for u_area, u_aspect, u_top, u_left in uniform:
                side = math.sqrt((budget - min_num_patches) * u_area + min_num_patches)
                stretch = u_aspect * aspect_scale + aspect_shift
                h, w = round(side * math.exp(stretch)), round(side * math.exp(-stretch))
                if h >= height or w >= width:
                    continue
                box = rows[int(u_top * (height + 1 - h)) * (height + 1) + h] & cols[int(u_left * (width + 1 - w)) * (width + 1) + w]
                new = h * w - (box & bits).bit_count()
                if 0 < new <= budget:
                    bits, added = bits | box, new
                    break
            if added == 0:
                break
            done += added
        mask[image] = np.frombuffer(bits.to_bytes(8 * words, "little"), dtype="<u8")


@functools.lru_cache(maxsize=64)
def _area_table(height: int, width: int, cap: int) -> np.ndarray:
    """Flat (cap * cap,) uint32: entry h * cap + w is h * w if an h x w rectangle fits in the grid (h < height and
    w < width, as BEiT requires), else 2^20, more than any budget."""
    sides = np.arange(cap)
    fits = (sides[:, None] < height) & (sides < width)
    return np.where(fits, sides[:, None] * sides, 1 << 20).astype(np.uint32).ravel()


def _log_aspect_range(min_aspect: float) -> tuple[float, float]:
    """(log a, log(1 / a)) for a = min(min_aspect, 1 / min_aspect): BEiT's aspect ratio range. A min_aspect above 1
    gives the same range, as in BEiT (`max_aspect = 1 / min_aspect`, the log aspect drawn between the two)."""
    if not min_aspect > 0:  # NaN too
        raise ValueError(
            f"min_aspect={min_aspect} must be > 0: block masking draws aspect ratios in [min_aspect, 1 / min_aspect] "
            "(BEiT: 0.3)."
        )
    low = min_aspect if min_aspect <= 1.0 else 1.0 / min_aspect
    return math.log(low), math.log(1.0 / low)


def block_mask(
    batch_size: int, grid: tuple[int, int], num_masked: int, min_num_patches: int = 16,
    max_num_patches: int | None = None, min_aspect: float = 0.3, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """BEiT's block-wise masking (Algorithm 1 of Bao et al., `MaskingGenerator` in the BEiT code), batched.

    All images run the algorithm in lockstep: each round draws 10 candidate rectangles per unfinished image
    (area in [min_num_patches, remaining], log aspect ratio uniform in [log min_aspect, -log min_aspect], sides
    rounded half to even as Python's `round`; min_aspect > 1 reads as 1 / min_aspect, as in BEiT, and <= 0 is
    refused) and keeps the first that fits and adds between 1 and the remaining
    number of patches; an image stops when it reaches `num_masked` or no candidate qualifies. Same distribution
    as the per-image loop. Masks are bit sets (uint64 words), so a rectangle is one AND of a row band and a
    column band and its new patches are one popcount: a round is a few dozen numpy calls on (B, 10) arrays,
    with heights and widths (and rows and columns) handled together as (2, B, 10) arrays. The last few
    unfinished images (`PYTHON_TAIL`) finish one by one on Python ints, where a numpy round would cost more.

    Returns:
        `torch.Tensor` of shape (B, grid_h * grid_w): bool, True = masked. At most `num_masked` per image.
    """
    height, width = grid
    max_num_patches = num_masked if max_num_patches is None else max_num_patches
    log_low, log_high = _log_aspect_range(min_aspect)
    half_range, half_low = 0.5 * (log_high - log_low), 0.5 * log_low
    table = _band_table(height, width)
    words = table.shape[1]
    # Constants of a round. Heights use +log(aspect) / 2, widths -log(aspect) / 2 ((2, 1) factors); row bands come
    # first in `table`. `area[h, w]` is h * w for a rectangle that fits, and a number above any budget otherwise,
    # so one lookup both sizes a candidate and rules out those that do not fit; sides are at most `cap` - 1.
    sign = np.array([[1.0], [-1.0]], dtype=np.float32)
    aspect_scale, aspect_shift = sign * np.float32(half_range), sign * np.float32(half_low)
    cap = math.ceil(math.sqrt(max(num_masked, min_num_patches)) * math.exp(half_range + half_low)) + 2
    area = _area_table(height, width, cap)
    band_stride = np.array([height + 1, width + 1]).reshape(2, 1, 1)
    band_offset = np.array([0, height * (height + 1)]).reshape(2, 1, 1)
    row_starts = np.arange(0, 10 * batch_size, 10)
    # a rectangle's new patches are summed from byte popcounts four at a time (x * 0x01010101 >> 24 adds the four
    # bytes of a uint32); exact while no sum exceeds 255, i.e. for grids of at most 255 patches
    byte_sums = height * width <= 255
    # numpy, not torch: a round is ~40 calls on small arrays, where numpy's per-call overhead is a fraction of
    # torch's; its generator is seeded from `generator`. Masks are bit sets; `ids` lists the unfinished images.
    mask = np.zeros((batch_size, words), dtype=np.uint64)
    ids = np.arange(batch_size) if num_masked > 0 else np.arange(0)  # the unfinished images
    remaining = np.full(ids.size, num_masked, dtype=np.uint32)  # patches still to mask, per unfinished image
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))  # seeded from `generator`
    size, used = 50 * batch_size, 50 * batch_size  # uniforms for five full rounds per draw (a run needs four or five)
    while ids.size > PYTHON_TAIL:
        n = ids.size
        if used + 10 * n > size:  # (4, size) uniforms in one call, and the aspect factors of all of them at once
            size, used = max(size, 10 * n), 0
            pool = rng.random((4, size), dtype=np.float32)  # float32 halves the memory traffic of every op below
            stretch_pool = np.exp(pool[1] * aspect_scale + aspect_shift)  # (2, size)
        uniform = pool[:, used : used + 10 * n].reshape(4, n, 10)
        stretch = stretch_pool[:, used : used + 10 * n].reshape(2, n, 10)
        used += 10 * n
        work = np.take(mask, ids, axis=0)  # (n, words)
        budget = (remaining if max_num_patches >= num_masked else np.minimum(remaining, max_num_patches))[:, None]
        side = np.sqrt(np.subtract(budget, min_num_patches, dtype=np.float32) * uniform[0] + np.float32(min_num_patches))
        hw = np.rint(side * stretch).astype(np.intp)  # (2, n, 10) heights and widths
        corner = (uniform[2:] * (band_stride - hw)).astype(np.intp)  # top, left uniform in 0 .. side - h (w)
        # (indices of rectangles that do not fit may fall outside the table: clipped, and ruled out by `area`)
        bands = np.take(table, corner * band_stride + hw + band_offset, axis=0, mode="clip")  # (2, n, 10, words)
        boxes = bands[0] & bands[1]  # (n, 10, words)
        overlap = _popcount(boxes & work[:, None])  # (n, 10, words) uint8
        new = np.take(area, hw[0] * cap + hw[1], mode="clip")  # (n, 10) uint32
        if byte_sums:
            overlap = (overlap.view(np.uint32) * np.uint32(0x01010101)) >> np.uint32(24)
            for chunk in range(words // 4):
                new -= overlap[..., chunk]
        else:
            new -= overlap.sum(-1, dtype=np.uint32)
        valid = (new - np.uint32(1)) < budget  # 1 <= new <= budget (0 - 1 wraps around)
        first = valid.argmax(axis=1) + row_starts[:n]  # flat index of each image's first valid candidate
        chosen = np.take(valid, first)
        mask[ids] = work | np.take(boxes.reshape(10 * n, words), first, axis=0) * chosen[:, None].astype(np.uint64)
        remaining -= np.take(new, first) * chosen
        kept = np.flatnonzero(chosen & (remaining > 0))
        ids, remaining = ids[kept], remaining[kept]
    if ids.size:
        count = num_masked - remaining.astype(np.int64)
        _finish_per_image(mask, ids, count, grid, num_masked, max_num_patches, min_num_patches, half_range, half_low, rng)
    bits = np.unpackbits(mask.astype("<u8").view(np.uint8), axis=1, bitorder="little")[:, : height * width]
    return torch.from_numpy(np.ascontiguousarray(bits).view(bool))


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
    num_cells = cells_side**2
    _, cells, _ = random_patch_mask(batch_size, num_cells, num_masked, generator)
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
        mask_ratio (`float`): fraction of patches masked (MAE default 0.75), in (0, 1): the loss is over the masked
            patches, so at least one must be masked and one left visible.
        masking (`str`): "random" (MAE), "block" (BEiT) or "simmim".
        mask_patch_size (`int`): SimMIM's masking cell side in pixels (32); at least 2 cells per side, and not
            every cell masked.
        min_num_patches, max_num_patches, min_aspect: BEiT block parameters (16, unlimited, 0.3). min_aspect must
            be > 0 (above 1 it reads as 1 / min_aspect, as in BEiT); a grid where no such rectangle fits is refused.
        crop_scale (`tuple[float, float]`): random resized crop area range; (1.0, 1.0) just resizes.
        flip_p (`float`): horizontal flip probability.
        mean, std (`tuple[float, ...]`): normalisation per channel (ImageNet's by default).
        channels (`int`): 3 (grayscale replicated) or 1.
        image_column (`str`): key of the image in each example; other columns pass through, except the dataset's
            `label` / `labels`, dropped as the pretext collators do: the masked-image models take no class labels,
            and with a `labels` key Trainer takes their mean loss for a per-item sum (no division by the
            gradient-accumulation steps, a product with the number of processes).
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

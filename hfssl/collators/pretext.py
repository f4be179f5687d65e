"""Pretext-task collators: rotation prediction, jigsaw puzzles, colorization.

Each turns examples holding an image into `pixel_values` and the task's `labels`; the dataset's own
label column is not passed through (it would clash with the pretext labels). Pair them with the heads in
`hfssl.models.pretext_heads` to train with `Trainer`.

Legend: B batch, C channels, S image side, T tiles (grid^2), t tile side, N permutations.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from hfssl.augmentations.geometric import random_resized_crops
from hfssl.augmentations.image_io import decode_batch
from hfssl.augmentations.normalization import IMAGENET_MEAN, IMAGENET_STD
from hfssl.augmentations.photometric import LUMA, rgb_to_lab
from hfssl.augmentations.seeding import WorkerSeededGenerator

logger = logging.getLogger(__name__)


@dataclass
class _ImageCollator:
    """Shared fields: decode, crop and flip the images of a batch (not public)."""

    image_size: int = 32
    crop_scale: tuple[float, float] = (1.0, 1.0)
    flip_p: float = 0.5
    channels: int = 3
    image_column: str = "image"
    skip_invalid_images: bool = False
    seed: int | None = None
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = WorkerSeededGenerator(self.seed)

    def _crops(self, examples: list[dict[str, Any]], size: int, channels: int) -> tuple[torch.Tensor, torch.Generator]:
        """Images -> float crops in [0, 1] (B, channels, size, size) and the generator for further draws."""
        generator = self._rng.get()
        batch, sizes, kept = decode_batch(examples, self.image_column, channels, self.skip_invalid_images)
        if len(kept) < len(examples):
            logger.warning("skipped %d unreadable images in this batch", len(examples) - len(kept))
        crops = random_resized_crops(batch, sizes, size, self.crop_scale, (3 / 4, 4 / 3), self.flip_p, generator)
        return crops / 255.0, generator


def _normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    if len(mean) not in (1, images.shape[1]) or len(std) not in (1, images.shape[1]):
        raise ValueError(f"mean={mean} and std={std} must have 1 or {images.shape[1]} values (one per channel).")
    return (images - images.new_tensor(mean).view(1, -1, 1, 1)) / images.new_tensor(std).view(1, -1, 1, 1)


@dataclass
class DataCollatorForRotation(_ImageCollator):
    """Rotation prediction (Gidaris et al., 2018, "RotNet"): label k means a rotation by k * 90 degrees
    counter-clockwise (`torch.rot90(image, k, dims=(-2, -1))`), k in {0, 1, 2, 3}.

    Args:
        image_size (`int`): output side S. crop_scale, flip_p: random resized crop and flip before rotating
            ((1, 1) keeps the whole image). channels, image_column, skip_invalid_images, seed: as the other collators.
        all_rotations (`bool`): True (the paper's choice) yields all 4 rotations of each image, rows 4 b + k;
            False draws one rotation per image.
        mean, std (`tuple[float, ...]`): normalisation (ImageNet's by default).

    Returns (from `__call__`):
        `dict` with `pixel_values` (4B or B, C, S, S) float32 and `labels` (4B or B,) long.
    """

    all_rotations: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images, generator = self._crops(examples, self.image_size, self.channels)
        images = _normalize(images, self.mean, self.std)
        rotated = torch.stack([torch.rot90(images, k, dims=(2, 3)) for k in range(4)], 1)  # (B, 4, C, S, S)
        if self.all_rotations:
            labels = torch.arange(4).repeat(images.shape[0])
            return {"pixel_values": rotated.flatten(0, 1), "labels": labels}
        labels = torch.randint(0, 4, (images.shape[0],), generator=generator)
        return {"pixel_values": rotated[torch.arange(images.shape[0]), labels], "labels": labels}


@lru_cache(maxsize=8)
def maximal_hamming_permutations(num_permutations: int, num_tiles: int = 9, seed: int = 0) -> torch.Tensor:
    """A set of tile permutations far apart in Hamming distance (after Noroozi and Favaro, 2016, Algorithm 1).

    Greedy: start from a random permutation, then repeatedly add the permutation whose minimum Hamming distance to
    the set chosen so far is largest (ties: the first in lexicographic order). The paper's Algorithm 1 adds the
    argmax of the summed distance instead; the minimum keeps every pair of puzzles apart, where a large sum can
    still sit next to one chosen permutation.

    Returns:
        `torch.Tensor` of shape (N, T), long: row i is permutation i (the label of a puzzle shuffled with it).
    """
    if num_tiles > 9:
        raise ValueError(f"num_tiles={num_tiles} is too large to enumerate permutations; use a grid of at most 3x3.")
    count = math.factorial(num_tiles)
    flat = np.fromiter(itertools.chain.from_iterable(itertools.permutations(range(num_tiles))), dtype=np.uint8, count=count * num_tiles)
    candidates = torch.from_numpy(flat.reshape(count, num_tiles))
    if not 1 <= num_permutations <= len(candidates):
        raise ValueError(f"num_permutations={num_permutations} must be in [1, {len(candidates)}] for {num_tiles} tiles.")
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(0, len(candidates), (1,), generator=generator))]
    min_distance = (candidates != candidates[chosen[0]]).sum(1)
    for _ in range(num_permutations - 1):
        chosen.append(int(min_distance.argmax()))
        min_distance = torch.minimum(min_distance, (candidates != candidates[chosen[-1]]).sum(1))
    return candidates[chosen].long()


@dataclass
class DataCollatorForJigsaw(_ImageCollator):
    """Jigsaw puzzles (Noroozi and Favaro, 2016): cut each image into grid x grid cells, take a tile of side
    cell - tile_jitter at a random offset inside each cell, shuffle the tiles with one of `num_permutations`
    permutations (chosen greedily by maximal minimum Hamming distance, `maximal_hamming_permutations`) and
    predict its index.

    Output tile k is input tile `permutations[label][k]` (input tiles in row-major order), so
    `tiles[:, permutations[label].argsort()]` restores the puzzle.

    Args:
        image_size (`int`): side S of the image the cells are cut from (the paper: 225, cells 75, tiles 64).
        grid (`int`): cells per side (3). num_permutations (`int`): N, the number of classes (paper: 100 to 1000).
        tile_jitter (`int`): random offset range of a tile inside its cell, in pixels (0 = tiles fill the cells).
        per_tile_normalization (`bool`): standardise each tile on its own (the paper does, against shortcuts);
            otherwise normalise with `mean`/`std`.
        permutation_seed (`int`): seed of the permutation set (keep it fixed between training and evaluation).

    Returns (from `__call__`):
        `dict` with `pixel_values` (B, T, C, t, t) float32 and `labels` (B,) long in [0, N).
    """

    image_size: int = 96
    grid: int = 3
    num_permutations: int = 100
    tile_jitter: int = 0
    per_tile_normalization: bool = True
    permutation_seed: int = 0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        super().__post_init__()
        cell = self.image_size // self.grid
        if cell * self.grid != self.image_size or not 0 <= self.tile_jitter < cell:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of grid={self.grid} and tile_jitter={self.tile_jitter} "
                f"smaller than the cell side {cell}; e.g. image_size=96, grid=3, tile_jitter=4."
            )

    @property
    def permutations(self) -> torch.Tensor:
        """The permutation set (N, T); row i is the permutation of label i."""
        return maximal_hamming_permutations(self.num_permutations, self.grid**2, self.permutation_seed)

    @property
    def tile_size(self) -> int:
        """Tile side t = image_size / grid - tile_jitter."""
        return self.image_size // self.grid - self.tile_jitter

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images, generator = self._crops(examples, self.image_size, self.channels)
        batch, tiles_count, cell, tile = images.shape[0], self.grid**2, self.image_size // self.grid, self.tile_size
        offsets = torch.randint(0, self.tile_jitter + 1, (batch, tiles_count, 2), generator=generator)
        cell_index = torch.arange(tiles_count)
        top = (cell_index // self.grid * cell).view(1, -1) + offsets[..., 0]  # (B, T)
        left = (cell_index % self.grid * cell).view(1, -1) + offsets[..., 1]
        steps = torch.arange(tile)
        rows = (top.unsqueeze(-1) + steps).view(batch, tiles_count, tile, 1)
        cols = (left.unsqueeze(-1) + steps).view(batch, tiles_count, 1, tile)
        tiles = images.permute(0, 2, 3, 1)[torch.arange(batch).view(-1, 1, 1, 1), rows, cols]  # (B, T, t, t, C)
        tiles = tiles.permute(0, 1, 4, 2, 3)  # (B, T, C, t, t)
        labels = torch.randint(0, self.num_permutations, (batch,), generator=generator)
        tiles = tiles[torch.arange(batch).view(-1, 1), self.permutations[labels]]
        if self.per_tile_normalization:
            mean = tiles.mean(dim=(2, 3, 4), keepdim=True)
            std = tiles.std(dim=(2, 3, 4), keepdim=True).clamp(min=1e-3)
            tiles = (tiles - mean) / std
        else:
            tiles = _normalize(tiles.flatten(0, 1), self.mean, self.std).view_as(tiles)
        return {"pixel_values": tiles.contiguous(), "labels": labels}


@dataclass
class DataCollatorForColorization(_ImageCollator):
    """Colorization (Zhang et al., 2016; Larsson et al., 2016): a grayscale input and its colours as target.

    Args:
        target (`str`): "lab" (the paper's: input L / 50 - 1, target ab / 110, about [-1, 1]) or "rgb"
            (input: luma * 2 - 1, target: RGB in [0, 1]).
        channels (`int`): channels of the input, 1 or 3 (the gray channel replicated, for RGB backbones).
        image_size, crop_scale, flip_p, image_column, skip_invalid_images, seed: as the other collators.

    Returns (from `__call__`):
        `dict` with `pixel_values` (B, channels, S, S) float32 and `labels` (B, 2, S, S) for "lab" or
        (B, 3, S, S) for "rgb", float32.
    """

    target: str = "lab"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target not in ("lab", "rgb"):
            raise ValueError(f"target={self.target!r} is not supported; use 'lab' (ab channels) or 'rgb'.")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images, _ = self._crops(examples, self.image_size, 3)
        if self.target == "lab":
            lab = rgb_to_lab(images)
            gray, labels = lab[:, :1] / 50.0 - 1.0, lab[:, 1:] / 110.0
        else:
            gray = (images * images.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True) * 2.0 - 1.0
            labels = images
        return {"pixel_values": gray.expand(-1, self.channels, -1, -1).contiguous(), "labels": labels}

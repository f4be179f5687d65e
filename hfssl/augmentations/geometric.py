"""Batched geometric ops with per-sample random parameters, drawn from an explicit `torch.Generator`: random
resized crop and horizontal flip, as torchvision's, on uint8 images of different sizes padded into one batch.

Legend: B batch, C channels, H height, W width, S output side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NUM_CROP_ATTEMPTS = 10  # as torchvision.transforms.RandomResizedCrop


def sample_resized_crop_boxes(
    sizes: torch.Tensor, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one random resized crop box (x0, y0, x1, y1) per image, in pixels (B, 4) float32, with torchvision's
    `RandomResizedCrop` algorithm.

    For each image, 10 candidate boxes with area fraction ~ U(scale) and log aspect ratio ~ U(log ratio)
    are drawn; the first that fits is kept, otherwise the central crop with the aspect ratio clamped
    to `ratio` (Szegedy et al., 2015; the SimCLR/MoCo/BYOL/DINO default scale is (0.08, 1)).

    Args:
        sizes (`torch.Tensor` of shape (B, 2)): (H, W) of each image.
        scale (`tuple[float, float]`): range of the crop area as a fraction of the image area.
        ratio (`tuple[float, float]`): range of the crop aspect ratio width / height.
    """
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale={scale} is invalid; expected 0 < scale[0] <= scale[1] <= 1, e.g. (0.08, 1.0).")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio={ratio} is invalid; expected 0 < ratio[0] <= ratio[1], e.g. (3/4, 4/3).")
    batch = sizes.shape[0]
    height, width = sizes[:, 0:1], sizes[:, 1:2]
    area = height * width
    shape = (batch, NUM_CROP_ATTEMPTS)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(shape, generator=generator))
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * torch.rand(shape, generator=generator))
    crop_w = torch.round(torch.sqrt(target_area * aspect))
    crop_h = torch.round(torch.sqrt(target_area / aspect))
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    top = torch.floor(torch.rand(shape, generator=generator) * (height - crop_h + 1))
    left = torch.floor(torch.rand(shape, generator=generator) * (width - crop_w + 1))

    # fallback: central crop with the aspect ratio clamped to `ratio`
    in_ratio = width / height
    fb_w = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    fb_top = torch.div(height - fb_h, 2, rounding_mode="floor")
    fb_left = torch.div(width - fb_w, 2, rounding_mode="floor")

    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first attempt that fits
    any_fit = fits.any(dim=1, keepdim=True)
    pick = lambda value, fallback: torch.where(any_fit, value.gather(1, first), fallback)  # noqa: E731
    y0, x0 = pick(top, fb_top), pick(left, fb_left)
    y1, x1 = y0 + pick(crop_h, fb_h), x0 + pick(crop_w, fb_w)
    return torch.cat([x0, y0, x1, y1], dim=1).float()


def resize_boxes_uint8(
    images: torch.Tensor, boxes: torch.Tensor, size: int, image_index: torch.Tensor, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Cut integer boxes out of uint8 images and resize each to `size` (bilinear, antialiased when shrinking): a
    contiguous uint8 (N, C, S, S).

    Same result as torchvision's `resized_crop(image, top, left, h, w, size, antialias=True)` on each box (then
    `hflip` where `flip`): `F.interpolate` on the uint8 box, with no float copy of the batch.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)): uint8.
        boxes (`torch.Tensor` of shape (N, 4)): (x0, y0, x1, y1), integer-valued, inside each image.
        size (`int`): output side S.
        image_index (`torch.Tensor` of shape (N,)): which image each box cuts.
        flip (`torch.Tensor` of shape (N,), *optional*): bool, flip these crops horizontally.
    """
    source = images.contiguous(memory_format=torch.channels_last)  # the layout torch's uint8 resize kernel is made for
    flips = [False] * boxes.shape[0] if flip is None else flip.tolist()
    crops = []
    for index, (x0, y0, x1, y1), flipped in zip(image_index.tolist(), boxes.long().tolist(), flips):
        box = source[index : index + 1, :, y0:y1, x0:x1]
        crop = F.interpolate(box, size=(size, size), mode="bilinear", antialias=True)
        crops.append(crop.flip(-1) if flipped else crop)
    return torch.cat(crops).contiguous()


def random_resized_crops(
    images: torch.Tensor, sizes: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float],
    flip_p: float, generator: torch.Generator | None = None, repeats: int = 1, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """`repeats` independent random resized crops (+ flips) of every image, rounded to the uint8 grid: (R * B, C, S, S)
    of `dtype`, holding integer values in [0, 255].

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)): uint8 or float in [0, 255], zero-padded (see `stack_padded`).
        sizes (`torch.Tensor` of shape (B, 2)): true (H, W) of each image.
        size (`int`): output side S.
        scale, ratio, flip_p: as torchvision's `RandomResizedCrop` and `RandomHorizontalFlip`.
        repeats (`int`): crops per image R; crop r of image b is row r * B + b.
        dtype (`torch.dtype`): float32 (default) or uint8 for the result.
    """
    batch = images.shape[0]
    boxes = sample_resized_crop_boxes(sizes.repeat(repeats, 1), scale, ratio, generator)
    flip = torch.rand(repeats * batch, generator=generator) < flip_p
    if images.dtype != torch.uint8:
        images = images.round().clamp_(0, 255).to(torch.uint8)
    return resize_boxes_uint8(images, boxes, size, torch.arange(batch).repeat(repeats), flip).to(dtype)

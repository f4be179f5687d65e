"""Batched geometric ops with per-sample random parameters: random resized crop and horizontal flip.

All randomness comes from an explicit `torch.Generator`. Crops are resampled for the whole batch at
once with `torchvision.ops.roi_align` (bilinear, with adaptive area averaging when a crop shrinks, so
downscaling is antialiased), which also handles images of different sizes padded into one batch
and images smaller than the crop (they are upsampled).

Legend: B batch, C channels, H height, W width, S output side.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

NUM_CROP_ATTEMPTS = 10  # as torchvision.transforms.RandomResizedCrop


def sample_resized_crop_boxes(
    sizes: torch.Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one random resized crop box per image, with torchvision's `RandomResizedCrop` algorithm.

    For each image, 10 candidate boxes with area fraction ~ U(scale) and log aspect ratio ~ U(log ratio)
    are drawn; the first that fits is kept, otherwise the central crop with the aspect ratio clamped
    to `ratio` (Szegedy et al., 2015; the SimCLR/MoCo/BYOL/DINO default scale is (0.08, 1)).

    Args:
        sizes (`torch.Tensor` of shape (B, 2)): (H, W) of each image.
        scale (`tuple[float, float]`): range of the crop area as a fraction of the image area.
        ratio (`tuple[float, float]`): range of the crop aspect ratio width / height.
        generator (`torch.Generator`, *optional*): source of randomness.

    Returns:
        `torch.Tensor` of shape (B, 4): boxes (x0, y0, x1, y1) in pixels, float32.
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
    fb_w = torch.where(in_ratio < ratio[0], width, torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width))
    fb_h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    fb_top, fb_left = torch.div(height - fb_h, 2, rounding_mode="floor"), torch.div(width - fb_w, 2, rounding_mode="floor")

    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first attempt that fits
    any_fit = fits.any(dim=1, keepdim=True)
    pick = lambda value, fallback: torch.where(any_fit, value.gather(1, first), fallback)  # noqa: E731
    y0, x0 = pick(top, fb_top), pick(left, fb_left)
    y1, x1 = y0 + pick(crop_h, fb_h), x0 + pick(crop_w, fb_w)
    return torch.cat([x0, y0, x1, y1], dim=1).float()


def crop_and_resize(
    images: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int], image_index: torch.Tensor | None = None
) -> torch.Tensor:
    """Cut boxes out of the images and resize them to `size`, for the whole batch in one call.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)): any dtype; computed in float32.
        boxes (`torch.Tensor` of shape (N, 4)): (x0, y0, x1, y1) in pixels.
        size (`int` or `tuple[int, int]`): output side S or (height, width).
        image_index (`torch.Tensor` of shape (N,), *optional*): which image each box cuts; default box i
            from image i (then N must equal B).

    Returns:
        `torch.Tensor` of shape (N, C, S, S), float32, same value range as `images`.
    """
    output_size = (size, size) if isinstance(size, int) else tuple(size)
    if image_index is None:
        if images.shape[0] != boxes.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {boxes.shape[0]} boxes; pass one box per image or image_index.")
        image_index = torch.arange(images.shape[0])
    indices = image_index.to(device=images.device, dtype=torch.float32).unsqueeze(1)
    rois = torch.cat([indices, boxes.to(device=images.device, dtype=torch.float32)], dim=1)
    return roi_align(images.float(), rois, output_size=output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def flip_horizontal(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images where `flip` is True.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)).
        flip (`torch.Tensor` of shape (B,)): bool.

    Returns:
        `torch.Tensor` of shape (B, C, H, W), a new tensor.
    """
    rows = torch.nonzero(flip).squeeze(1).to(images.device)
    images = images.clone()
    images[rows] = images[rows].flip(-1)
    return images


def random_resized_crops(
    images: torch.Tensor,
    sizes: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_p: float,
    generator: torch.Generator | None = None,
    repeats: int = 1,
) -> torch.Tensor:
    """`repeats` independent random resized crops (+ flips) of every image, rounded to the uint8 grid.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)): uint8 or float in [0, 255], zero-padded (see `stack_padded`).
        sizes (`torch.Tensor` of shape (B, 2)): true (H, W) of each image.
        size (`int`): output side S. scale, ratio, flip_p: as `torchvision.transforms.RandomResizedCrop`/`RandomHorizontalFlip`.
        generator (`torch.Generator`, *optional*): source of randomness.
        repeats (`int`): crops per image R; crop r of image b is row r * B + b.

    Returns:
        `torch.Tensor` of shape (R * B, C, S, S), float32 holding integer values in [0, 255].
    """
    batch = images.shape[0]
    boxes = sample_resized_crop_boxes(sizes.repeat(repeats, 1), scale, ratio, generator)
    flip = torch.rand(repeats * batch, generator=generator) < flip_p
    crops = crop_and_resize(images, boxes, size, torch.arange(batch).repeat(repeats))
    crops = crops.round_().clamp_(0, 255)
    rows = torch.nonzero(flip).squeeze(1).to(crops.device)
    crops[rows] = crops[rows].flip(-1)  # in place: `crops` is ours
    return crops

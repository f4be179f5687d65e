"""Batched photometric ops with per-sample parameters, on float images in [0, 1] on any device.

Each op takes the batch and per-sample parameters (drawn beforehand from a `torch.Generator`, see
`draw_photometric_params`), so the same parameters can be drawn on CPU in a DataLoader worker and
applied later on the accelerator. Formulas follow torchvision.transforms.v2 (colour jitter factors,
luma weights, HSV hue rotation, Gaussian kernel, solarisation threshold).

Legend: B batch, C channels (1 or 3), H height, W width, K blur kernel size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL and torchvision


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images, kept with 3 channels: (B, 3, H, W) -> (B, 3, H, W)."""
    if images.shape[1] == 1:
        return images.clone()
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True).expand_as(images)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp_(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply by `factor` (B,) and clamp to [0, 1]."""
    return _blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean luma of each image by `factor` (B,)."""
    channel_means = images.mean(dim=(2, 3))
    if images.shape[1] == 3:
        channel_means = (channel_means * channel_means.new_tensor(LUMA)).sum(1, keepdim=True)
    mean = channel_means.view(-1, 1, 1, 1)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image by `factor` (B,); identity for 1-channel images."""
    if images.shape[1] == 1:
        return images
    return _blend(images, grayscale(images), factor)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` (B,) in [-0.5, 0.5] (as torchvision's `adjust_hue`); identity for 1 channel.

    Fused RGB -> HSV -> RGB: with V = max, delta = max - min = V S and H6 the hue in sixths, each channel is
    V - delta clamp(min(k, 4 - k), 0, 1) where k = (n + H6 + 6 shift) mod 6 and n = 5, 3, 1 for R, G, B.
    """
    if images.shape[1] == 1:
        return images
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    maxc, minc = images.amax(1, keepdim=True), images.amin(1, keepdim=True)
    delta = maxc - minc
    safe = (delta == 0).to(images.dtype).add_(delta)  # gray pixels: any hue gives V back
    is_red = maxc == red
    is_green = (maxc == green).logical_and_(~is_red)
    is_blue = (~is_red).logical_and_(~is_green)
    hue6 = (green - blue).mul_(is_red)
    hue6 += (blue - red).add_(safe, alpha=2.0).mul_(is_green)
    hue6 += (red - green).add_(safe, alpha=4.0).mul_(is_blue)
    hue6.div_(safe).add_(6.0 * shift.to(images.dtype).view(-1, 1, 1, 1))
    k = (images.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1) + hue6).remainder_(6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0).mul_(delta)
    return torch.sub(maxc, k, out=k).clamp_(0.0, 1.0)

JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """torchvision's `ColorJitter`, per sample: its own four factors, its own random order.

    The batch is sorted once by each sample's op order (24 orders, plus "not jittered"), so every order runs
    its four ops on one contiguous slice, then unsorted: two copies instead of a gather/scatter per op.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)): float in [0, 1].
        factors (`torch.Tensor` of shape (B, 4)): brightness, contrast, saturation factors and hue shift.
        order (`torch.Tensor` of shape (B, 4)): a permutation of the four ops (0 b, 1 c, 2 s, 3 h) per sample.
        apply (`torch.Tensor` of shape (B,)): bool, whether the sample is jittered at all.

    Returns:
        `torch.Tensor` of shape (B, C, H, W), a new tensor.
    """
    order, apply = order.cpu(), apply.cpu()
    code = torch.where(apply, (order * torch.tensor([64, 16, 4, 1])).sum(1), -1)  # one code per op order
    code, index = code.sort(stable=True)
    device_index = index.to(images.device)
    images, factors = images[device_index], factors.to(images)[device_index]
    values, counts = torch.unique_consecutive(code, return_counts=True)
    start = 0
    for value, count in zip(values.tolist(), counts.tolist()):
        if value >= 0:
            chunk = images[start : start + count]
            for op_index in order[index[start]].tolist():
                chunk = JITTER_OPS[op_index](chunk, factors[start : start + count, op_index])
            images[start : start + count] = chunk
        start += count
    restored = torch.empty_like(images)
    restored[device_index] = images
    return restored


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels: sigma (B,) -> (B, K)."""
    offsets = torch.arange(kernel_size, dtype=sigma.dtype, device=sigma.device) - (kernel_size - 1) / 2
    weights = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(-1, 1)) ** 2)
    return weights / weights.sum(1, keepdim=True)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (reflect padding, as torchvision).

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)).
        sigma (`torch.Tensor` of shape (B,)).
        kernel_size (`int`): odd K.

    Returns:
        `torch.Tensor` of shape (B, C, H, W).
    """
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size={kernel_size} must be a positive odd integer.")
    batch, channels, height, width = images.shape
    kernels = gaussian_kernels(sigma.to(images.device, images.dtype), kernel_size).repeat_interleave(channels, 0)
    flat = images.reshape(1, batch * channels, height, width)
    pad = kernel_size // 2
    mode = "reflect" if pad < min(height, width) else "replicate"
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode=mode), kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode=mode), kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def solarize(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert the pixels at or above `threshold` (torchvision's `solarize`)."""
    return torch.where(images >= threshold, 1.0 - images, images)


def where_rows(mask: torch.Tensor, op, images: torch.Tensor, *args, inplace: bool = False) -> torch.Tensor:
    """Apply `op(images[rows], *args[rows])` only to the rows where `mask` (B,) is True; a new tensor unless
    `inplace` (for tensors the caller owns)."""
    rows = torch.nonzero(mask).squeeze(1)
    if rows.numel() == 0:
        return images
    images = images if inplace else images.clone()
    images[rows] = op(images[rows], *[arg[rows] if isinstance(arg, torch.Tensor) else arg for arg in args])
    return images


_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.950456, 1.0, 1.088754)


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (B, 3, H, W) -> CIE Lab (D65) (B, 3, H, W): L in [0, 100], a and b in about [-110, 110].

    Same constants as skimage.color.rgb2lab (used by the colorization papers, Zhang et al., 2016)."""
    linear = torch.where(images > 0.04045, ((images + 0.055) / 1.055) ** 2.4, images / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", images.new_tensor(_RGB_TO_XYZ), linear) / images.new_tensor(_WHITE_D65).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    lightness = 116.0 * f[:, 1] - 16.0
    return torch.stack([lightness, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) (B, 3, H, W) -> sRGB clamped to [0, 1] (B, 3, H, W); the inverse of `rgb_to_lab`."""
    fy = (lab[:, 0] + 16.0) / 116.0
    f = torch.stack([fy + lab[:, 1] / 500.0, fy, fy - lab[:, 2] / 200.0], 1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * lab.new_tensor(_WHITE_D65).view(1, 3, 1, 1)
    linear = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(lab.new_tensor(_RGB_TO_XYZ)), xyz).clamp(min=0.0)
    return torch.where(linear > 0.0031308, 1.055 * linear.clamp(min=1e-12) ** (1 / 2.4) - 0.055, 12.92 * linear).clamp(0.0, 1.0)

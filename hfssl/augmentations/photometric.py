"""Batched photometric ops with per-sample parameters (drawn beforehand, `ViewAugmentation.draw_photometric`), on
float images in [0, 1] on any device. Formulas follow torchvision.transforms.v2.

Legend: B batch, C channels (1 or 3), H height, W width, K blur kernel size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL and torchvision


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): 0.299 R + 0.587 G + 0.114 B."""
    return LUMA[0] * images[:, 0:1] + LUMA[1] * images[:, 1:2] + LUMA[2] * images[:, 2:3]


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images, kept with 3 channels: (B, 3, H, W) -> (B, 3, H, W)."""
    if images.shape[1] == 1:
        return images.clone()
    return _luma(images).expand_as(images)


# The jitter ops work in place, on a tensor the caller owns (`color_jitter` gathers each group into a new one);
# the public `adjust_*` functions run them on a copy.


def _brightness_(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return images.mul_(factor.to(images.dtype).view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _contrast_(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    means = images.mean(dim=(2, 3))
    if images.shape[1] == 3:  # the mean luma
        means = (means * means.new_tensor(LUMA)).sum(1, keepdim=True)
    factor = factor.to(images.dtype).view(-1, 1, 1, 1)
    return images.mul_(factor).add_(means.view(-1, 1, 1, 1) * (1.0 - factor)).clamp_(0.0, 1.0)


def _saturation_(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    factor = factor.to(images.dtype).view(-1, 1, 1, 1)
    return torch.lerp(_luma(images).expand_as(images), images, factor, out=images).clamp_(0.0, 1.0)


def _hue_(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV -> RGB in one go: with V = max and delta = max - min, output channel n is V - delta * ramp_n."""
    if images.shape[1] == 1:
        return images
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    maxc = torch.maximum(torch.maximum(red, green), blue)
    delta = maxc - torch.minimum(torch.minimum(red, green), blue)
    safe = delta.clamp_min(torch.finfo(images.dtype).tiny)  # gray pixels: numerators 0, and the output is V anyway
    # the hue H in sixths, in [-1, 5]: (g - b) / delta where red is the max (red wins ties, as in torchvision), else
    # (b - r) / delta + 2 where green is, else (r - g) / delta + 4. The choice is made by lerps with 0/1 weights (the
    # signs of max - red and max - green) rather than `where`: bench/views.py, BENCHMARKS.md 2026-12-07.
    not_red, not_green = (maxc - red).sign_(), (maxc - green).sign_()
    hue = torch.lerp((blue - red).add_(safe, alpha=2.0), (red - green).add_(safe, alpha=4.0), not_green)
    hue = torch.lerp(green - blue, hue, not_red).div_(safe)
    # ramp_n = clamp(min(k, 4 - k), 0, 1), k = (n + H + 6 shift) mod 6 and n = 5, 3, 1 for R, G, B, is clamp(2 - d,
    # 0, 1) with d the distance on the hue circle (length 6) from H to the centre c = 2 - n - 6 shift; with c reduced
    # into [-1, 5) per sample, e = |H - c| lies in [0, 6] and d = 3 - |e - 3|
    centres = images.new_tensor([-3.0, -1.0, 1.0]) - 6.0 * shift.to(images.dtype).view(-1, 1)  # (B, 3)
    centres = centres.add_(1.0).remainder_(6.0).sub_(1.0)
    ramp = (hue - centres.view(-1, 3, 1, 1)).abs_().sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    return torch.addcmul(maxc, delta, ramp, value=-1.0, out=images)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply by `factor` (B,) and clamp to [0, 1]."""
    return _brightness_(images.clone(), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean luma of each image by `factor` (B,): factor * images + (1 - factor) * mean, clamped."""
    return _contrast_(images.clone(), factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the luma by `factor` (B,): gray + factor * (images - gray), clamped; identity for 1 channel."""
    return _saturation_(images.clone(), factor)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` (B,) in [-0.5, 0.5] (as torchvision's `adjust_hue`); identity for 1 channel."""
    return _hue_(images.clone(), shift)


JITTER_OPS = (_brightness_, _contrast_, _saturation_, _hue_)  # op i of `order`, in place


def color_jitter(
    images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """torchvision's `ColorJitter`, per sample: its own four factors, its own random order.

    The samples are grouped by op order (at most 24 groups); each group goes through its four ops batched.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)): float in [0, 1].
        factors (`torch.Tensor` of shape (B, 4)): brightness, contrast, saturation factors and hue shift.
        order (`torch.Tensor` of shape (B, 4)): a permutation of the four ops (0 b, 1 c, 2 s, 3 h) per sample.
        apply (`torch.Tensor` of shape (B,)): bool, whether the sample is jittered at all.
        out (`torch.Tensor` of shape (B, C, H, W), *optional*): where to write the result; may be `images`.

    Returns:
        `torch.Tensor` of shape (B, C, H, W): `out`, or a new tensor.
    """
    order, apply, factors = order.cpu(), apply.cpu(), factors.to(images.device, images.dtype)
    codes = torch.where(apply, (order * torch.tensor([64, 16, 4, 1])).sum(1), -1)  # one code per op order
    if out is None:
        out = images.clone()
    elif out is not images:
        out.copy_(images)
    for code in codes.unique().tolist():
        if code < 0:  # not jittered
            continue
        rows = torch.nonzero(codes == code).squeeze(1)
        device_rows = rows.to(images.device)
        group, group_factors = out.index_select(0, device_rows), factors.index_select(0, device_rows)
        for op_index in order[rows[0]].tolist():
            JITTER_OPS[op_index](group, group_factors[:, op_index])
        out.index_copy_(0, device_rows, group)
    return out


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image, reflect padding (as torchvision's `gaussian_blur`).

    Two depthwise 1-D convolutions (one kernel per image and channel). Images whose side is not larger than half
    the kernel cannot be reflected: they are padded by replicating the border instead.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)).
        sigma (`torch.Tensor` of shape (B,)).
        kernel_size (`int`): odd K.

    Returns:
        `torch.Tensor` of shape (B, C, H, W), a new tensor.
    """
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size={kernel_size} must be a positive odd integer.")
    batch, channels, height, width = images.shape
    offsets = torch.arange(kernel_size, dtype=images.dtype, device=images.device) - (kernel_size - 1) / 2
    weights = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.to(images.device, images.dtype).view(-1, 1)) ** 2)
    kernels = (weights / weights.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (B * C, K)
    pad = kernel_size // 2
    mode = "reflect" if pad < min(height, width) else "replicate"
    flat = F.pad(images.reshape(1, batch * channels, height, width), (pad, pad, pad, pad), mode=mode)
    flat = F.conv2d(flat, kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    flat = F.conv2d(flat, kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def solarize(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert the pixels at or above `threshold` (torchvision's `solarize` for images in [0, 1])."""
    return torch.where(images >= threshold, 1.0 - images, images)


_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.950456, 1.0, 1.088754)


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (B, 3, H, W) -> CIE Lab (D65) (B, 3, H, W): L in [0, 100], a and b in about [-110, 110].

    Same constants as skimage.color.rgb2lab (used by the colorization papers, Zhang et al., 2016)."""
    linear = torch.where(images > 0.04045, ((images + 0.055) / 1.055) ** 2.4, images / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", images.new_tensor(_RGB_TO_XYZ), linear)
    xyz = xyz / images.new_tensor(_WHITE_D65).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    lightness = 116.0 * f[:, 1] - 16.0
    return torch.stack([lightness, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) (B, 3, H, W) -> sRGB clamped to [0, 1] (B, 3, H, W); the inverse of `rgb_to_lab`."""
    fy = (lab[:, 0] + 16.0) / 116.0
    f = torch.stack([fy + lab[:, 1] / 500.0, fy, fy - lab[:, 2] / 200.0], 1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * lab.new_tensor(_WHITE_D65).view(1, 3, 1, 1)
    linear = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(lab.new_tensor(_RGB_TO_XYZ)), xyz).clamp(min=0.0)
    srgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp(min=1e-12) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return srgb.clamp(0.0, 1.0)

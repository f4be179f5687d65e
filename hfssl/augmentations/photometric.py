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
_HUE_CENTRES = (3.0, 5.0, 1.0)


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): 0.299 R + 0.587 G + 0.114 B, reading the images once."""
    luma = images[:, 0:1] * LUMA[0]
    luma.add_(images[:, 1:2], alpha=LUMA[1])
    return luma.add_(images[:, 2:3], alpha=LUMA[2])


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images, kept with 3 channels: (B, 3, H, W) -> (B, 3, H, W)."""
    if images.shape[1] == 1:
        return images.clone()
    return _luma(images).expand_as(images)


# The in-place jitter ops take `white`, the value of white: 1.0 for images in [0, 1], 255.0 for images in [0, 255]
# (the collator works on the latter and folds the division by 255 into the normalisation: one pass fewer).


def _blend_(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor, white: float = 1.0) -> torch.Tensor:
    """In place: images <- clamp(factor * images + (1 - factor) * other, 0, white); `other` (B, 1, 1, 1) is ours."""
    factor = factor.to(images.dtype).view(-1, 1, 1, 1)
    return images.mul_(factor).add_(other.mul_(1.0 - factor)).clamp_(0.0, white)


def _brightness_(images: torch.Tensor, factor: torch.Tensor, white: float = 1.0) -> torch.Tensor:
    return images.mul_(factor.to(images.dtype).view(-1, 1, 1, 1)).clamp_(0.0, white)


def _contrast_(images: torch.Tensor, factor: torch.Tensor, white: float = 1.0) -> torch.Tensor:
    channel_means = images.mean(dim=(2, 3))
    if images.shape[1] == 3:
        channel_means = (channel_means * channel_means.new_tensor(LUMA)).sum(1, keepdim=True)
    return _blend_(images, channel_means.view(-1, 1, 1, 1), factor, white)


def _saturation_(images: torch.Tensor, factor: torch.Tensor, white: float = 1.0) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    # one lerp, gray + factor (images - gray), instead of a blend's three passes over the channels (1.5x faster)
    factor = factor.to(images.dtype).view(-1, 1, 1, 1)
    return torch.lerp(_luma(images).expand_as(images), images, factor, out=images).clamp_(0.0, white)


def _hue_(images: torch.Tensor, shift: torch.Tensor, white: float = 1.0) -> torch.Tensor:  # the same at any scale
    if images.shape[1] == 1:
        return images
    return _rotate_hue(images, shift, out=images)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply by `factor` (B,) and clamp to [0, 1]."""
    return _brightness_(images.clone(), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean luma of each image by `factor` (B,)."""
    return _contrast_(images.clone(), factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image by `factor` (B,); identity for 1-channel images."""
    return _saturation_(images.clone(), factor)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` (B,) in [-0.5, 0.5] (as torchvision's `adjust_hue`); identity for 1 channel.

    Fused RGB -> HSV -> RGB: with V = max, delta = max - min = V S and H6 the hue in sixths, each channel is
    V - delta clamp(min(k, 4 - k), 0, 1) where k = (n + H6 + 6 shift) mod 6 and n = 5, 3, 1 for R, G, B.
    """
    if images.shape[1] == 1:
        return images.clone()
    return _rotate_hue(images, shift, out=torch.empty_like(images))


def _rotate_hue(images: torch.Tensor, shift: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`adjust_hue` written into `out` (which may be `images`: it is only written at the end).

    Only float arithmetic on (B, 1, H, W) planes: on CPU, comparisons, `where` and `remainder` cost 5-20 times an
    add. Masks come from `sign` (max - red is 0 exactly where red is the max). The hue H6 in sixths lies in
    [-1, 5]; the per-channel periodic ramp clamp(min(k, 4 - k), 0, 1), k = (n + H6 + 6 shift) mod 6, is written
    clamp(2 - d, 0, 1) with d the distance on the hue circle (of length 6) between H6 and the channel's centre
    2 - n - 6 shift, which is reduced into [-1, 5) per sample (3 numbers), so that e = |H6 - centre| is in [0, 6]
    and d = 3 - |e - 3|: no remainder of the full tensor is needed.
    """
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    maxc = torch.maximum(red, green)
    torch.maximum(maxc, blue, out=maxc)
    minc = torch.minimum(red, green)
    torch.minimum(minc, blue, out=minc)
    delta = maxc - minc
    # delta, or the smallest normal float for gray pixels (whose numerators below are 0 and whose output is V anyway)
    safe = delta.clamp_min(torch.finfo(images.dtype).tiny)
    not_red = torch.sub(maxc, red).sign_()  # 0 where red is the max (red wins ties, as torchvision), else 1
    not_green = torch.sub(maxc, green).sign_()
    # H6 * delta: red max: g - b; green max: b - r + 2 delta; blue max: r - g + 4 delta (lerp weights are 0 or 1)
    hue6 = torch.lerp((blue - red).add_(safe, alpha=2.0), (red - green).add_(safe, alpha=4.0), not_green)
    hue6 = torch.lerp(green - blue, hue6, not_red).div_(safe)  # in [-1, 5]
    centres = torch.tensor(_HUE_CENTRES, dtype=images.dtype, device=images.device)  # 2 - n mod 6, n = 5, 3, 1
    centres = (centres - 6.0 * shift.to(images.dtype).view(-1, 1)).add_(1.0).remainder_(6.0).sub_(1.0)  # (B, 3)
    # all three channels at once, (B, 3, H, W), in place: the ramp clamp(2 - d, 0, 1) is clamp(|e - 3| - 1, 0, 1)
    # (the ramp + 1, clamp(|e - 3|, 1, 2), and max + delta instead of max: one pass over 3 planes fewer)
    ramp = (hue6 - centres.view(-1, 3, 1, 1)).abs_().sub_(3.0).abs_().clamp_(1.0, 2.0)
    return torch.addcmul(maxc.add_(delta), delta, ramp, value=-1.0, out=out)  # in [min, max] up to rounding


ROW_COPY_VALUES = 1 << 13  # `copy_rows_` copies rows of at least this many values one by one


def copy_rows_(out: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """out[rows] = values (`rows` distinct), in place. On CPU, `index_copy_` moves one value at a time (about 0.25
    ns each here) while a row's `copy_` is a memory copy after ~2 us of call overhead: rows of 8,192 values or
    more (e.g. 3 x 96 x 96 images: 36 against 63 us for 9 rows) are copied one by one, smaller ones with one
    `index_copy_`."""
    if out.device.type != "cpu" or values[0].numel() < ROW_COPY_VALUES:
        return out.index_copy_(0, rows.to(out.device), values)
    for value, row in zip(values, rows.tolist()):
        out[row].copy_(value)
    return out


JITTER_OPS = (_brightness_, _contrast_, _saturation_, _hue_)  # in place, on slices of a tensor color_jitter owns


def _jitter_codes(order: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """One integer per sample naming its jitter op order (0-255), -1 for samples not jittered."""
    return torch.where(apply, (order * torch.tensor([64, 16, 4, 1])).sum(1), -1)


def jitter_order(order: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """The permutation (B,) that sorts samples by jitter op order (stably; "not jittered" first): with the batch in
    this order, `color_jitter` runs every group in place on contiguous rows, with no gather and no scatter."""
    return _jitter_codes(order.cpu(), apply.cpu()).sort(stable=True).indices


def color_jitter(
    images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor, out: torch.Tensor | None = None,
    white: float = 1.0,
) -> torch.Tensor:
    """torchvision's `ColorJitter`, per sample: its own four factors, its own random order.

    The samples are grouped by op order (24 orders, plus "not jittered"); each group is gathered into a small
    buffer that stays in the CPU cache while its four ops run in place, then written back: no copy of the whole
    batch, and the samples left unjittered are not touched when `out` is `images`. A group whose rows are
    consecutive (a batch sorted with `jitter_order`) is worked on in place, without the gather and the write-back.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W)): float in [0, white].
        factors (`torch.Tensor` of shape (B, 4)): brightness, contrast, saturation factors and hue shift.
        order (`torch.Tensor` of shape (B, 4)): a permutation of the four ops (0 b, 1 c, 2 s, 3 h) per sample.
        apply (`torch.Tensor` of shape (B,)): bool, whether the sample is jittered at all.
        out (`torch.Tensor` of shape (B, C, H, W), *optional*): where to write the result; may be `images`.
        white (`float`): the value of white, 1.0 (default) or 255.0 for images in [0, 255] (the same result x 255).

    Returns:
        `torch.Tensor` of shape (B, C, H, W): `out`, or a new tensor.
    """
    order, apply = order.cpu(), apply.cpu()
    code = _jitter_codes(order, apply)
    code, index = code.sort(stable=True)
    device_index = index.to(images.device)
    factors = factors.to(images)
    if out is None:
        out = images.clone()
    elif out is not images:
        out.copy_(images)
    values, counts = torch.unique_consecutive(code, return_counts=True)
    start = 0
    for value, count in zip(values.tolist(), counts.tolist()):
        if value >= 0:
            rows = device_index[start : start + count]
            first, last = int(index[start]), int(index[start + count - 1])
            contiguous = last - first == count - 1  # increasing rows (stable sort): consecutive, e.g. after `jitter_order`
            group = out[first : last + 1] if contiguous else out.index_select(0, rows)  # in place, or gathered
            group_factors = factors[first : last + 1] if contiguous else factors.index_select(0, rows)
            for op_index in order[index[start]].tolist():
                JITTER_OPS[op_index](group, group_factors[:, op_index], white)
            if not contiguous:
                copy_rows_(out, rows, group)
        start += count
    return out


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels: sigma (B,) -> (B, K)."""
    offsets = torch.arange(kernel_size, dtype=sigma.dtype, device=sigma.device) - (kernel_size - 1) / 2
    weights = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(-1, 1)) ** 2)
    return weights / weights.sum(1, keepdim=True)


def _blur_matrices(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K) kernels -> (B, size, size) matrices M with (M x)[i] = sum_k kernels[k] x[reflect(i + k - K // 2)]."""
    batch, kernel_size = kernels.shape
    source = torch.arange(size, device=kernels.device).view(size, 1) + torch.arange(kernel_size, device=kernels.device) - kernel_size // 2
    source = source.abs()  # reflect at 0 (torchvision's "reflect": -1 -> 1)
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # and at size - 1
    matrices = kernels.new_zeros(batch, size, size)
    return matrices.scatter_add_(2, source.expand(batch, size, kernel_size), kernels.view(batch, 1, kernel_size).expand(batch, size, kernel_size))


def _banded_matmul(values: torch.Tensor, matrices: torch.Tensor, pad: int, block: int, left: bool) -> torch.Tensor:
    """`matrices @ values` (`left`) or `values @ matrices` for matrices whose output i only reads inputs i - pad ..
    i + pad (folded into 0 .. S - 1): blocks of `block` outputs, each from its window of inputs, when there are at
    least 3 blocks; one matmul otherwise."""
    side = values.shape[-2] if left else values.shape[-1]
    if side < 3 * block:
        return torch.matmul(matrices, values) if left else torch.matmul(values, matrices)
    pieces = []
    for start in range(0, side, block):
        end = min(side, start + block)
        low, high = max(0, start - pad), min(side, end + pad)
        if left:
            pieces.append(torch.matmul(matrices[..., start:end, low:high], values[..., low:high, :]))
        else:
            pieces.append(torch.matmul(values[..., low:high], matrices[..., low:high, start:end]))
    return torch.cat(pieces, -2 if left else -1)


DEPTHWISE_MAX_KERNEL = 17  # `gaussian_blur` on CPU: depthwise convolutions up to this kernel size, banded matmuls above


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (reflect padding, as torchvision).

    On CPU, for kernels of up to 17 taps (e.g. SimCLR's 10% of 96 px: K = 9), the two 1-D passes are depthwise
    convolutions on channels-last pixels (oneDNN's kernel): on an AVX-512 machine 11% faster than the matmuls
    below for the 128 blurred images of a 96 px view, and as fast with torch and oneDNN held to AVX2; for wider
    kernels (224 px: K = 23) they are 1.35x slower. Otherwise each 1-D pass is a batched matrix product with a
    banded (S, S) matrix per image that has the reflect padding folded in, cut into blocks of outputs that each
    multiply only the inputs they reach: matmul runs these far faster than a grouped convolution on NCHW pixels,
    although only part of its multiply-adds are useful. Falls back to grouped convolutions, with replicate
    padding, when the kernel is wider than the image or much narrower than it (S > 16 K).

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
    kernels = gaussian_kernels(sigma.to(images.device, images.dtype), kernel_size)
    pad = kernel_size // 2
    if images.device.type == "cpu" and pad < min(height, width) and kernel_size <= DEPTHWISE_MAX_KERNEL:
        flat = F.pad(images.reshape(1, batch * channels, height, width), (pad, pad, pad, pad), mode="reflect")
        flat = flat.contiguous(memory_format=torch.channels_last)
        per_channel = kernels.repeat_interleave(channels, 0)
        flat = F.conv2d(flat, per_channel.view(-1, 1, 1, kernel_size), groups=batch * channels)
        flat = F.conv2d(flat, per_channel.view(-1, 1, kernel_size, 1), groups=batch * channels)
        return flat.reshape(batch, channels, height, width).contiguous()
    if pad < min(height, width) and max(height, width) <= 16 * kernel_size:
        # the matrices are banded: for 3 or more blocks of outputs, each block only multiplies the inputs it can reach
        # (its side plus the padding on each side), e.g. 2.4x fewer multiply-adds and time at 96 px, same values
        block = max(16, 3 * kernel_size // 2)
        row_matrices = _blur_matrices(kernels, width).transpose(1, 2)  # (B, W in, W out)
        rows = _banded_matmul(images.reshape(batch, channels * height, width), row_matrices, pad, block, left=False)
        column_matrices = _blur_matrices(kernels, height).unsqueeze(1)  # (B, 1, H out, H in)
        return _banded_matmul(rows.view(batch, channels, height, width), column_matrices, pad, block, left=True)
    kernels = kernels.repeat_interleave(channels, 0)
    flat = images.reshape(1, batch * channels, height, width)
    mode = "reflect" if pad < min(height, width) else "replicate"
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode=mode), kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode=mode), kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def solarize(images: torch.Tensor, threshold: float = 0.5, white: float = 1.0) -> torch.Tensor:
    """Invert the pixels at or above `threshold` x `white` (torchvision's `solarize`; `white` 255.0 for [0, 255])."""
    return torch.where(images >= threshold * white, white - images, images)


PIECE_VALUES = 1 << 18  # `where_rows` works on pieces of about this many values (1 MB of float32): cache-sized


def where_rows(mask: torch.Tensor, op, images: torch.Tensor, *args, inplace: bool = False) -> torch.Tensor:
    """Apply `op(images[rows], *args[rows])` only to the rows where `mask` (B,) is True; a new tensor unless
    `inplace` (for tensors the caller owns). The rows go through `op` in pieces of about 1 MB, so each piece is
    gathered, transformed and written back while it is in the CPU cache (same result as one call)."""
    rows = torch.nonzero(mask).squeeze(1)
    if rows.numel() == 0:
        return images
    images = images if inplace else images.clone()
    step = max(1, PIECE_VALUES // max(1, images[0].numel())) if images.device.type == "cpu" else rows.numel()
    for start in range(0, rows.numel(), step):
        piece = rows[start : start + step]
        # index_select rather than images[piece] (advanced indexing): 1.2-1.5x faster here on CPU
        arguments = [arg.index_select(0, piece) if isinstance(arg, torch.Tensor) else arg for arg in args]
        copy_rows_(images, piece, op(images.index_select(0, piece), *arguments))
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

"""One view's augmentation recipe (`ViewAugmentation`) and the papers' presets built from it. A view is: random
resized crop -> horizontal flip (on the uint8 batch) -> colour jitter -> grayscale -> Gaussian blur -> solarisation
(photometric, on floats in [0, 1], drawn by `draw_photometric` and applied later, e.g. on an accelerator).

Legend: B batch, C channels, S crop side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hfssl.augmentations import photometric as P


@dataclass(frozen=True)
class ViewAugmentation:
    """Augmentation parameters of one view, torchvision semantics.

    Args:
        size (`int`): output side S of the crop.
        scale (`tuple[float, float]`): crop area fraction range of `RandomResizedCrop`.
        ratio (`tuple[float, float]`): crop aspect ratio range.
        flip_p (`float`): probability of a horizontal flip.
        jitter_p (`float`): probability of applying colour jitter.
        brightness, contrast, saturation (`float`): jitter factor drawn from U(max(0, 1 - x), 1 + x).
        hue (`float`): hue shift drawn from U(-hue, hue), at most 0.5.
        grayscale_p (`float`): probability of converting to grayscale.
        blur_p (`float`): probability of a Gaussian blur.
        blur_sigma (`tuple[float, float]`): sigma range in pixels.
        blur_kernel_size (`int`, *optional*): odd kernel side; default about 10% of `size` (SimCLR).
        solarize_p (`float`): probability of solarisation (BYOL, DINO).
        solarize_threshold (`float`): pixels at or above it (in [0, 1]) are inverted.
    """

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: int | None = None
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is not a probability; pass a value in [0, 1].")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue={self.hue} is out of range; pass a value in [0, 0.5].")
        if self.size < 1:
            raise ValueError(f"size={self.size} must be a positive number of pixels.")

    @property
    def kernel_size(self) -> int:
        """Odd blur kernel side: `blur_kernel_size`, or 10% of the crop side rounded to odd (>= 3)."""
        if self.blur_kernel_size is not None:
            return self.blur_kernel_size
        return max(3, int(0.1 * self.size) // 2 * 2 + 1)

    def draw_photometric(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw the per-sample photometric parameters of B images (on CPU).

        Returns:
            `dict` with `jitter` (B,) bool, `factors` (B, 4), `order` (B, 4) long, `grayscale` (B,) bool,
            `blur` (B,) bool, `sigma` (B,), `solarize` (B,) bool.
        """
        rand = lambda *shape: torch.rand(shape, generator=generator)  # noqa: E731
        spreads = (self.brightness, self.contrast, self.saturation)
        low = torch.tensor([max(0.0, 1 - spread) for spread in spreads] + [-self.hue])
        high = torch.tensor([1 + spread for spread in spreads] + [self.hue])
        return {
            "jitter": rand(batch_size) < self.jitter_p,
            "factors": low + (high - low) * rand(batch_size, 4),
            "order": rand(batch_size, 4).argsort(dim=1),
            "grayscale": rand(batch_size) < self.grayscale_p,
            "blur": rand(batch_size) < self.blur_p,
            "sigma": self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * rand(batch_size),
            "solarize": rand(batch_size) < self.solarize_p,
        }

    def apply_photometric(
        self, images: torch.Tensor, params: dict[str, torch.Tensor], inplace: bool = False
    ) -> torch.Tensor:
        """Apply drawn parameters (`draw_photometric`) to float images in [0, 1] (B, C, S, S), on the images'
        device: colour jitter, then grayscale, blur and solarisation on the images drawn for each. A new tensor, or
        with `inplace=True` `images` itself, overwritten."""
        params = {key: value.to(images.device) for key, value in params.items()}
        out = images if inplace else None
        images = P.color_jitter(images, params["factors"], params["order"], params["jitter"], out=out)
        rows = torch.nonzero(params["grayscale"]).squeeze(1)
        images.index_copy_(0, rows, P.grayscale(images.index_select(0, rows)))
        rows = torch.nonzero(params["blur"]).squeeze(1)
        if rows.numel():  # (a convolution over no channels is refused)
            blurred = P.gaussian_blur(images.index_select(0, rows), params["sigma"][rows], self.kernel_size)
            images.index_copy_(0, rows, blurred)
        rows = torch.nonzero(params["solarize"]).squeeze(1)
        images.index_copy_(0, rows, P.solarize(images.index_select(0, rows), self.solarize_threshold))
        return images


def simclr_views(
    image_size: int = 224, strength: float = 1.0, blur_p: float = 0.5, min_scale: float = 0.08
) -> list[ViewAugmentation]:
    """SimCLR (Chen et al., 2020, Appendix A): crop (0.08, 1), flip, jitter (0.8s, 0.8s, 0.8s, 0.2s) with
    p=0.8, grayscale p=0.2, blur p=0.5 with kernel 10% of the side and sigma in [0.1, 2]. Two identical views.
    For CIFAR-sized images the paper uses s=0.5 and no blur (`blur_p=0`)."""
    view = ViewAugmentation(
        size=image_size, scale=(min_scale, 1.0), jitter_p=0.8, brightness=0.8 * strength, contrast=0.8 * strength,
        saturation=0.8 * strength, hue=min(0.5, 0.2 * strength), grayscale_p=0.2, blur_p=blur_p,
    )
    return [view, view]


def moco_v2_views(image_size: int = 224, min_scale: float = 0.2) -> list[ViewAugmentation]:
    """MoCo v2 (Chen et al., 2020, "Improved baselines"): crop (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8,
    grayscale p=0.2, blur sigma [0.1, 2] p=0.5, flip. Two identical views."""
    view = ViewAugmentation(
        size=image_size, scale=(min_scale, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_p=0.5
    )
    return [view, view]


def byol_views(image_size: int = 224, min_scale: float = 0.08) -> list[ViewAugmentation]:
    """BYOL (Grill et al., 2020, Table 6): crop (0.08, 1), flip, jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale
    p=0.2; asymmetric: blur p=1.0 / 0.1 and solarisation p=0.0 / 0.2 for view 1 / view 2."""
    common = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, grayscale_p=0.2)
    view_1 = ViewAugmentation(size=image_size, scale=(min_scale, 1.0), blur_p=1.0, solarize_p=0.0, **common)
    view_2 = ViewAugmentation(size=image_size, scale=(min_scale, 1.0), blur_p=0.1, solarize_p=0.2, **common)
    return [view_1, view_2]


def local_crop_size(global_size: int) -> int:
    """The multi-crop local side for a global side (DINO, SwAV: 96 for 224): 96/224 of it, rounded to a multiple of
    8 (>= 8), so ViT patch sizes 8 and 16 tile it (224 -> 96, 32 -> 16)."""
    return max(8, round(global_size * 96 / 224 / 8) * 8)


def dino_views(
    global_size: int = 224, local_size: int | None = None, num_local_crops: int = 8,
    global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
) -> list[ViewAugmentation]:
    """DINO multi-crop (Caron et al., 2021, main_dino.py): 2 global crops (scale (0.4, 1), blur p=1.0 then
    p=0.1 with solarisation p=0.2) and `num_local_crops` local crops (scale (0.05, 0.4), blur p=0.5), all with
    flip, jitter (0.4, 0.4, 0.2, 0.1) p=0.8 and grayscale p=0.2; blur sigma [0.1, 2]. `local_size` None:
    `local_crop_size(global_size)`."""
    local_size = local_crop_size(global_size) if local_size is None else local_size
    common = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, grayscale_p=0.2)
    global_1 = ViewAugmentation(size=global_size, scale=global_scale, blur_p=1.0, **common)
    global_2 = ViewAugmentation(size=global_size, scale=global_scale, blur_p=0.1, solarize_p=0.2, **common)
    local = ViewAugmentation(size=local_size, scale=local_scale, blur_p=0.5, **common)
    return [global_1, global_2] + [local] * num_local_crops


def swav_views(
    global_size: int = 224, local_size: int | None = None, num_local_crops: int = 6,
    global_scale: tuple[float, float] = (0.14, 1.0), local_scale: tuple[float, float] = (0.05, 0.14),
) -> list[ViewAugmentation]:
    """SwAV multi-crop (Caron et al., 2020, main_swav.py, 2x224 + 6x96): random resized crops at `global_scale` /
    `local_scale`, flip, colour distortion of strength 1 (jitter (0.8, 0.8, 0.8, 0.2) p=0.8, grayscale p=0.2), blur
    p=0.5. `local_size` None: `local_crop_size(global_size)`."""
    local_size = local_crop_size(global_size) if local_size is None else local_size
    common = dict(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, jitter_p=0.8, grayscale_p=0.2, blur_p=0.5)
    global_view = ViewAugmentation(size=global_size, scale=global_scale, **common)
    local_view = ViewAugmentation(size=local_size, scale=local_scale, **common)
    return [global_view, global_view] + [local_view] * num_local_crops

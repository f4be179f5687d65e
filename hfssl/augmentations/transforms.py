"""Per-image multi-view transforms (`MultiViewTransform` and the papers' presets) for any Dataset pipeline, and the
two halves of view making that they and `DataCollatorForMultiView` share: `draw_views` crops a uint8 batch and draws
the photometric parameters of every view, `finish_view` applies them and normalises.

The presets take the knob names of `DataCollatorForMultiView`'s presets and the papers' defaults; each says which
lightly argument each name stands for (docs/vision.md lists them all).

Legend: B batch, C channels, H height, W width, S view side, V views.
"""

from __future__ import annotations

from typing import Any

import torch

from hfssl.augmentations import presets
from hfssl.augmentations.geometric import random_resized_crops
from hfssl.augmentations.image_io import to_uint8_chw
from hfssl.augmentations.normalization import IMAGENET_MEAN, IMAGENET_STD
from hfssl.augmentations.photometric import LUMA
from hfssl.augmentations.presets import ViewAugmentation
from hfssl.augmentations.seeding import WorkerSeededGenerator

OUTPUT_DTYPES = ("float32", "uint8")


def check_view_settings(
    views: list[ViewAugmentation], mean: tuple[float, ...] | None, std: tuple[float, ...] | None, channels: int,
    output_dtype: str,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate the settings a collator or transform makes views with; return (mean, std), filled in with ImageNet's
    (for 1 channel, their luma) where None."""
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} is not supported; use 3 (RGB, default) or 1 (grayscale).")
    if output_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"output_dtype={output_dtype!r} is not supported; use 'float32' or 'uint8'.")
    if not views or not all(isinstance(view, ViewAugmentation) for view in views):
        raise TypeError(f"views must be a non-empty list of ViewAugmentation, got {views!r}.")
    if mean is None:
        mean = IMAGENET_MEAN if channels == 3 else (sum(w * m for w, m in zip(LUMA, IMAGENET_MEAN)),)
    if std is None:
        std = IMAGENET_STD if channels == 3 else (sum(w * s for w, s in zip(LUMA, IMAGENET_STD)),)
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ValueError(
            f"mean={mean} and std={std} must have 1 or channels={channels} values; "
            "pass per-channel statistics matching `channels`."
        )
    return mean, std


def draw_views(
    images: torch.Tensor, sizes: torch.Tensor, views: list[ViewAugmentation], generator: torch.Generator | None
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The geometric half of every view of a batch, and the draw of its photometric parameters.

    Identical views (e.g. SimCLR's two) are cropped together as one (R * B) batch; for each distinct view, in order
    of first appearance, the photometric parameters are drawn first, then the crops.

    Args:
        images (`torch.Tensor` of shape (B, C, H, W), uint8): the zero-padded batch (`stack_padded`).
        sizes (`torch.Tensor` of shape (B, 2)): the true (H, W) of each image.
        views (`list[ViewAugmentation]`): V views, in output order.
        generator (`torch.Generator`, *optional*): the source of all randomness.

    Returns:
        crops: V uint8 tensors of shape (B, C, S_v, S_v); params: V dicts of `ViewAugmentation.draw_photometric`.
    """
    batch_size = images.shape[0]
    crops: list[torch.Tensor | None] = [None] * len(views)
    all_params: list[dict[str, torch.Tensor] | None] = [None] * len(views)
    groups: dict[ViewAugmentation, list[int]] = {}
    for index, view in enumerate(views):
        groups.setdefault(view, []).append(index)
    for view, indices in groups.items():
        repeats = len(indices)
        params = view.draw_photometric(repeats * batch_size, generator)
        view_crops = random_resized_crops(
            images, sizes, view.size, view.scale, view.ratio, view.flip_p, generator, repeats, torch.uint8
        )
        for position, index in enumerate(indices):
            rows = slice(position * batch_size, (position + 1) * batch_size)
            crops[index] = view_crops[rows]
            all_params[index] = {key: value[rows] for key, value in params.items()}
    return crops, all_params


def finish_view(
    crops: torch.Tensor, view: ViewAugmentation, params: dict[str, torch.Tensor], mean: tuple[float, ...],
    std: tuple[float, ...], output_dtype: str = "float32", share_memory: bool = False,
) -> torch.Tensor:
    """The photometric half of one view: uint8 crops -> photometric ops -> float32 normalised, or uint8.

    Args:
        crops (`torch.Tensor` of shape (B, C, S, S), uint8): from `draw_views`.
        view (`ViewAugmentation`), params (`dict`): the view and its drawn parameters.
        mean, std (`tuple[float, ...]`): per-channel normalisation (1 or C values).
        output_dtype (`str`): "float32" (normalised) or "uint8" (augmented, values 0-255).
        share_memory (`bool`): make the float result in shared memory (a DataLoader worker's batch, handed over as
            it is).

    Returns:
        `torch.Tensor` of shape (B, C, S, S), on the device of `crops`.
    """
    images = torch.empty(crops.shape, device=crops.device)
    if share_memory and output_dtype == "float32" and crops.device.type == "cpu":
        images.share_memory_()
    images = view.apply_photometric(images.copy_(crops).div_(255.0), params, inplace=True)
    if output_dtype == "uint8":
        return images.mul_(255.0).round_().to(torch.uint8)
    return images.sub_(images.new_tensor(mean).view(1, -1, 1, 1)).div_(images.new_tensor(std).view(1, -1, 1, 1))


class MultiViewTransform:
    """One image -> V augmented views, for a Dataset (torchvision's `transform=`, `datasets`' `with_transform`).

    The same ops, order of random draws and normalisation as `DataCollatorForMultiView` on a batch of one image:
    `MultiViewTransform(views, seed=s)(image)[v]` equals `DataCollatorForMultiView(views, seed=s)([{"image":
    image}])["pixel_values"][v][0]` (over N images the two draw in different orders). Seeding: a
    `WorkerSeededGenerator`, so each DataLoader worker draws its own stream.

    Args:
        views (`list[ViewAugmentation]`): one entry per view, in output order (see `hfssl.augmentations.presets`).
        mean, std (`tuple[float, ...]`, *optional*): normalisation per channel; default ImageNet's (for 1 channel,
            their luma). `normalization_from(backbone)` reads a backbone's.
        seed (`int`, *optional*): the generator's seed; None draws it from torch's global RNG.
        channels (`int`): 3 (grayscale replicated) or 1.
        output_dtype (`str`): "float32" (normalised) or "uint8" (augmented, not normalised).
        image_column (`str`): the column `transform_batch` reads.

    Returns (from `__call__(image)`):
        `list` of V `torch.Tensor` of shape (C, S_v, S_v), in the order of `views`. `image` is a PIL image, a uint8
        numpy array (H, W) or (H, W, C), a tensor (C, H, W) (uint8, or float in [0, 1]) or a `datasets` Image dict.
    """

    def __init__(
        self, views: list[ViewAugmentation], mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None, seed: int | None = None, channels: int = 3,
        output_dtype: str = "float32", image_column: str = "image",
    ) -> None:
        self.views = list(views) if isinstance(views, (list, tuple)) else views
        self.mean, self.std = check_view_settings(self.views, mean, std, channels, output_dtype)
        self.channels, self.output_dtype, self.image_column = channels, output_dtype, image_column
        self.seed = seed
        self._rng = WorkerSeededGenerator(seed)

    def __repr__(self) -> str:
        sizes = [view.size for view in self.views]
        return f"{type(self).__name__}(views={len(self.views)}, sizes={sizes}, seed={self.seed})"

    def __call__(self, image: Any) -> list[torch.Tensor]:
        pixels = to_uint8_chw(image, self.channels).unsqueeze(0)  # (1, C, H, W)
        sizes = torch.tensor([[float(pixels.shape[2]), float(pixels.shape[3])]])
        crops, params = draw_views(pixels, sizes, self.views, self._rng.get())
        return [
            finish_view(view_crops, view, view_params, self.mean, self.std, self.output_dtype)[0]
            for view_crops, view, view_params in zip(crops, self.views, params)
        ]

    def transform_batch(self, examples: dict[str, list]) -> dict[str, list]:
        """For `datasets.Dataset.with_transform(transform.transform_batch)`: the `image_column` of a batch of
        examples replaced by `pixel_values` (each a list of V views); `label` renamed `labels` (as the collator
        does); every other column passed through. A DataLoader's `default_collate` then gives `pixel_values` as V
        tensors (B, C, S_v, S_v), what the method models take."""
        if self.image_column not in examples:
            raise KeyError(
                f"the batch has no column {self.image_column!r} (columns: {sorted(examples)}); pass "
                "image_column=<the image column> to the transform."
            )
        batch = {("labels" if key == "label" else key): value for key, value in examples.items()}
        batch["pixel_values"] = [self(image) for image in batch.pop(self.image_column)]
        return batch


class SimCLRTransform(MultiViewTransform):
    """SimCLR's two views (`simclr_views`; the paper drops blur on CIFAR: `blur_p=0`). lightly: `input_size` ->
    `image_size`, `cj_strength` -> `strength`, `gaussian_blur` -> `blur_p`. Other keyword arguments (`mean`, `std`,
    `seed`, ...) go to `MultiViewTransform`, as for every preset."""

    def __init__(
        self, image_size: int = 224, strength: float = 1.0, blur_p: float = 0.5, min_scale: float = 0.08,
        **kwargs: Any,
    ) -> None:
        super().__init__(presets.simclr_views(image_size, strength, blur_p, min_scale), **kwargs)


class MoCoV2Transform(MultiViewTransform):
    """MoCo v2's two views (`moco_v2_views`). lightly: `input_size` -> `image_size`."""

    def __init__(self, image_size: int = 224, min_scale: float = 0.2, **kwargs: Any) -> None:
        super().__init__(presets.moco_v2_views(image_size, min_scale), **kwargs)


class BYOLTransform(MultiViewTransform):
    """BYOL's two asymmetric views (`byol_views`). lightly: `input_size` -> `image_size` (one for both views)."""

    def __init__(self, image_size: int = 224, min_scale: float = 0.08, **kwargs: Any) -> None:
        super().__init__(presets.byol_views(image_size, min_scale), **kwargs)


class DINOTransform(MultiViewTransform):
    """DINO's multi-crop (`dino_views`): 2 global views then `num_local_crops` local ones. lightly:
    `global_crop_size` / `local_crop_size` -> `global_size` / `local_size`, `global_crop_scale` / `local_crop_scale`
    -> `global_scale` / `local_scale`, `n_local_views` -> `num_local_crops` (lightly's default 6; the paper's, 8)."""

    def __init__(
        self, global_size: int = 224, local_size: int | None = None, num_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
        **kwargs: Any,
    ) -> None:
        views = presets.dino_views(global_size, local_size, num_local_crops, global_scale, local_scale)
        super().__init__(views, **kwargs)


class SwAVTransform(MultiViewTransform):
    """SwAV's multi-crop (`swav_views`): 2 global views then `num_local_crops` local ones. lightly:
    `crop_sizes=(g, l)` -> `global_size`, `local_size`; `crop_counts=(2, n)` -> `num_local_crops=n`;
    `crop_min_scales` / `crop_max_scales` -> `global_scale`, `local_scale`."""

    def __init__(
        self, global_size: int = 224, local_size: int | None = None, num_local_crops: int = 6,
        global_scale: tuple[float, float] = (0.14, 1.0), local_scale: tuple[float, float] = (0.05, 0.14),
        **kwargs: Any,
    ) -> None:
        views = presets.swav_views(global_size, local_size, num_local_crops, global_scale, local_scale)
        super().__init__(views, **kwargs)


"""`DataCollatorForMultiView`: a batch of images -> several augmented views per image (SimCLR, MoCo, BYOL, DINO).

The whole batch is augmented at once, in two halves: the geometric half in the collator (decoded uint8 images,
each crop resized on the uint8 pixels, as torchvision's `RandomResizedCrop`), and the photometric half (colour
jitter, grayscale, blur, solarisation, normalisation) batched with per-sample parameters drawn in the collator,
run in the collator or, with `photometric_on_device=True`, wherever the batch goes (`apply_photometric`).

Legend: B batch, C channels, S view side, V views.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import get_worker_info

from hfssl.augmentations.image_io import collate_columns, decode_batch
from hfssl.augmentations.normalization import normalization_from
from hfssl.augmentations.presets import ViewAugmentation, byol_views, dino_views, moco_v2_views, simclr_views, swav_views
from hfssl.augmentations.seeding import WorkerSeededGenerator
from hfssl.augmentations.transforms import check_view_settings, draw_views, finish_view

logger = logging.getLogger(__name__)
PAPER_VIEWS = ("simclr", "moco_v2", "byol", "dino", "swav")  # the presets `DataCollatorForMultiView.paper_views` builds


@dataclass
class DataCollatorForMultiView:
    """Collate examples holding an image into V augmented views of each image.

    Build it from a paper preset (`simclr`, `moco_v2`, `byol`, `dino`) or from a list of `ViewAugmentation`.

    Args:
        views (`list[ViewAugmentation]`): one entry per view, in output order. Default: SimCLR at 224 px.
        mean, std (`tuple[float, ...]`, *optional*): normalisation per channel; default ImageNet's (for 1 channel,
            their luma). Use `normalization_from(backbone_or_image_processor)` to take them from a backbone.
        channels (`int`): 3 (default; grayscale images are replicated so timm/HF backbones work) or 1.
        image_column (`str`): the example key holding the image (PIL image, uint8 numpy HWC/HW, CHW tensor, or
            a `datasets` Image dict). Every other column passes through; `label` becomes `labels`.
        output_dtype (`str`): "float32" (normalised) or "uint8" (augmented, not normalised, values 0-255).
        photometric_on_device (`bool`, *optional*): False: the collator (in the DataLoader workers, if any)
            returns finished views. True: it returns uint8 geometric crops (a quarter of the bytes of float32 views)
            and the drawn `photometric_params`, and `collator.apply_photometric(batch)` finishes them where the
            batch is (e.g. on the accelerator). None (default): as False, except that an `SSLTrainer` training on
            an accelerator sets it to True and finishes the batches there (`SSLTrainer.finish_views`).
        skip_invalid_images (`bool`): skip unreadable images (count logged) instead of raising.
        seed (`int`, *optional*): seed of the collator's generator (distinct per DataLoader worker).

    Returns (from `__call__`):
        `dict` with `pixel_values`: list of V tensors of shape (B, C, S_v, S_v), float32 or uint8, in the order
        of `views`. Views of the same resolution are adjacent (DINO: the 2 global views, then the local ones),
        so `torch.cat(pixel_values[:2])` feeds all global views to the backbone in one pass. Plus the
        pass-through columns, e.g. `labels` (B,), and with `photometric_on_device`, `photometric_params`.
    """

    views: list[ViewAugmentation] = field(default_factory=lambda: simclr_views(224))
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3
    image_column: str = "image"
    output_dtype: str = "float32"
    photometric_on_device: bool | None = None
    skip_invalid_images: bool = False
    seed: int | None = None
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.mean, self.std = check_view_settings(self.views, self.mean, self.std, self.channels, self.output_dtype)
        self._rng = WorkerSeededGenerator(self.seed)
        self.num_skipped = 0

    @classmethod
    def _preset(cls, views: list[ViewAugmentation], normalization_source: Any, kwargs: dict) -> DataCollatorForMultiView:
        if normalization_source is not None:
            kwargs["mean"], kwargs["std"] = normalization_from(normalization_source)
        return cls(views=views, **kwargs)

    @classmethod
    def simclr(
        cls, image_size: int = 224, strength: float = 1.0, blur_p: float = 0.5, min_scale: float = 0.08,
        normalization_source: Any = None, **kwargs: Any,
    ) -> DataCollatorForMultiView:
        """SimCLR's two views (Chen et al., 2020): crop (0.08, 1), flip, jitter with strength s (0.8s, 0.8s, 0.8s,
        0.2s) p=0.8, grayscale p=0.2, blur p=0.5 (the paper drops blur on CIFAR: `blur_p=0`).
        `normalization_source`: timm model / data config / HF image processor to read mean and std from.
        Other keyword arguments (seed, mean, std, channels, ...) go to the constructor."""
        return cls._preset(simclr_views(image_size, strength, blur_p, min_scale), normalization_source, kwargs)

    @classmethod
    def moco_v2(cls, image_size: int = 224, min_scale: float = 0.2, normalization_source: Any = None, **kwargs: Any) -> DataCollatorForMultiView:
        """MoCo v2's two views (Chen et al., 2020): crop (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale
        p=0.2, blur p=0.5, flip."""
        return cls._preset(moco_v2_views(image_size, min_scale), normalization_source, kwargs)

    @classmethod
    def byol(cls, image_size: int = 224, min_scale: float = 0.08, normalization_source: Any = None, **kwargs: Any) -> DataCollatorForMultiView:
        """BYOL's two asymmetric views (Grill et al., 2020): blur p=1.0 / 0.1, solarisation p=0 / 0.2."""
        return cls._preset(byol_views(image_size, min_scale), normalization_source, kwargs)

    @classmethod
    def dino(
        cls, global_size: int = 224, local_size: int | None = None, num_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
        normalization_source: Any = None, **kwargs: Any,
    ) -> DataCollatorForMultiView:
        """DINO multi-crop (Caron et al., 2021): 2 global views (B, C, global_size, global_size) then
        `num_local_crops` local views (B, C, local_size, local_size); `local_size` None: 96/224 of `global_size`
        (`local_crop_size`)."""
        views = dino_views(global_size, local_size, num_local_crops, global_scale, local_scale)
        return cls._preset(views, normalization_source, kwargs)

    @classmethod
    def swav(
        cls, global_size: int = 224, local_size: int | None = None, num_local_crops: int = 6,
        global_scale: tuple[float, float] = (0.14, 1.0), local_scale: tuple[float, float] = (0.05, 0.14),
        normalization_source: Any = None, **kwargs: Any,
    ) -> DataCollatorForMultiView:
        """SwAV multi-crop (Caron et al., 2020, 2x224 + 6x96): 2 global views then `num_local_crops` local views,
        colour distortion of strength 1, blur p=0.5; `local_size` None: 96/224 of `global_size`."""
        views = swav_views(global_size, local_size, num_local_crops, global_scale, local_scale)
        return cls._preset(views, normalization_source, kwargs)

    @classmethod
    def paper_views(
        cls, preset: str, image_size: int = 224, min_scale: float | None = None, strength: float | None = None,
        local_size: int | None = None, num_local_crops: int | None = None, **kwargs: Any,
    ) -> DataCollatorForMultiView:
        """A method's paper views by preset name (`PAPER_VIEWS`, what a method model's `views_for` returns) at
        `image_size` (the global crops' side for multi-crop), with the options a recipe exposes.

        Args:
            preset (`str`): "simclr", "moco_v2", "byol", "dino" or "swav".
            min_scale (`float`, *optional*): crop lower scale (None: the paper's); for multi-crop, the global crops'
                lower and the local crops' upper scale (DINO's 0.4, SwAV's 0.14).
            strength (`float`, *optional*): SimCLR's colour-jitter strength, refused for the other presets; None: 1.0
                with blur, or below 96 px the paper's CIFAR-10 setting (0.5, no blur; appendix B.9).
            local_size, num_local_crops (`int`, *optional*): the local crops (None: 96/224 of `image_size`, the
                paper's number).
            **kwargs: to the constructor (`mean`, `std`, `seed`, ...).
        """
        if preset not in PAPER_VIEWS:
            raise ValueError(f"Unknown views preset {preset!r}; choose one of {', '.join(PAPER_VIEWS)}.")
        if strength is not None and preset != "simclr":
            raise ValueError(
                f"--strength {strength} is SimCLR's colour-jitter strength; the {preset} views fix their paper's colour "
                "jitter. Drop --strength, or train --method simclr."
            )
        scale = {} if min_scale is None else {"min_scale": min_scale}
        if preset == "simclr":
            small = image_size < 96
            strength = (0.5 if small else 1.0) if strength is None else strength
            return cls.simclr(image_size, strength=strength, blur_p=0.0 if small else 0.5, **scale, **kwargs)
        if preset in ("dino", "swav"):
            lower = {"dino": 0.4, "swav": 0.14}[preset] if min_scale is None else min_scale
            crops = {} if num_local_crops is None else {"num_local_crops": num_local_crops}
            return getattr(cls, preset)(global_size=image_size, local_size=local_size, global_scale=(lower, 1.0),
                                        local_scale=(0.05, lower), **crops, **kwargs)  # fmt: skip
        return getattr(cls, preset)(image_size=image_size, **scale, **kwargs)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        generator = self._rng.get()
        batch_images, sizes, kept = decode_batch(examples, self.image_column, self.channels, self.skip_invalid_images)
        if len(kept) < len(examples):
            self.num_skipped += len(examples) - len(kept)
            logger.warning("skipped %d unreadable images in this batch (%d so far)", len(examples) - len(kept), self.num_skipped)
        crops, all_params = draw_views(batch_images, sizes, self.views, generator)
        batch = collate_columns([examples[i] for i in kept], exclude=(self.image_column,))
        batch["pixel_values"] = crops
        batch["photometric_params"] = all_params
        return batch if self.photometric_on_device else self.apply_photometric(batch)

    def apply_photometric(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Finish a batch made with `photometric_on_device=True`, on the device its tensors are on.

        Args:
            batch (`dict`): the collator's output, with uint8 `pixel_values` and `photometric_params`.

        Returns:
            A new `dict` without `photometric_params`, whose `pixel_values` are what the collator would have
            returned with `photometric_on_device=False` (float32 normalised, or uint8 per `output_dtype`).
        """
        if "photometric_params" not in batch:
            raise ValueError("the batch has no 'photometric_params'; build the collator with photometric_on_device=True.")
        finished = {key: value for key, value in batch.items() if key not in ("photometric_params", "pixel_values")}
        # a DataLoader worker makes the views in shared memory, which the DataLoader hands over as it is (as
        # `default_collate` does), instead of copying them there
        share_memory = get_worker_info() is not None
        finished["pixel_values"] = [
            finish_view(crops, view, params, self.mean, self.std, self.output_dtype, share_memory)
            for crops, view, params in zip(batch["pixel_values"], self.views, batch["photometric_params"])
        ]
        return finished

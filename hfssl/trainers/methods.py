"""The image SSL methods by name: each one's config, model, trainer and paper augmentation preset, for recipes and
benchmarks that take `--method`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.models.barlow_twins import BarlowTwinsConfig, BarlowTwinsModel
from hfssl.models.byol import BYOLConfig, BYOLModel
from hfssl.models.dino import DINOConfig, DINOModel
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.models.simsiam import SimSiamConfig, SimSiamModel
from hfssl.models.swav import SwAVConfig, SwAVModel
from hfssl.models.vicreg import VICRegConfig, VICRegModel
from hfssl.trainers.byol import BYOLTrainer, SimSiamTrainer
from hfssl.trainers.dino import DINOTrainer, dino_local_size
from hfssl.trainers.moco import MoCoTrainer
from hfssl.trainers.redundancy import BarlowTwinsTrainer, VICRegTrainer
from hfssl.trainers.simclr import SimCLRTrainer
from hfssl.trainers.swav import SwAVTrainer, swav_multi_crop_collator


@dataclass(frozen=True)
class SSLMethod:
    """One method: `name` (for model cards), its config / model / trainer classes, and `collator(image_size=...,
    min_scale=..., local_size=..., num_local_crops=..., mean=..., std=..., seed=...)` building its paper's views
    (`min_scale=None`: the paper's crop scale)."""

    name: str
    config_class: type
    model_class: type
    trainer_class: type
    collator: Callable[..., DataCollatorForMultiView]


def two_views(preset: Callable[..., DataCollatorForMultiView], **fixed: Any) -> Callable[..., DataCollatorForMultiView]:
    """A collator builder for a two-view preset; the multi-crop arguments are ignored."""

    def build(image_size: int, min_scale: float | None, mean: Any, std: Any, seed: int | None = None, **multi_crop: Any):
        scale = {} if min_scale is None else {"min_scale": min_scale}  # None: the preset's paper value
        return preset(image_size=image_size, mean=mean, std=std, seed=seed, **scale, **fixed)

    return build


def dino_crops(image_size: int, min_scale: float | None, mean: Any, std: Any, seed: int | None = None,
               local_size: int | None = None, num_local_crops: int = 8) -> DataCollatorForMultiView:
    """DINO's multi-crop: 2 global crops (scale (min_scale, 1); None: the paper's 0.4) and local crops (scale
    (0.05, min_scale))."""
    min_scale = 0.4 if min_scale is None else min_scale
    return DataCollatorForMultiView.dino(
        global_size=image_size, local_size=local_size or dino_local_size(image_size), num_local_crops=num_local_crops,
        global_scale=(min_scale, 1.0), local_scale=(0.05, min_scale), mean=mean, std=std, seed=seed,
    )  # fmt: skip


def swav_crops(image_size: int, min_scale: float | None, mean: Any, std: Any, seed: int | None = None,
               local_size: int | None = None, num_local_crops: int = 6) -> DataCollatorForMultiView:
    """SwAV's multi-crop: 2 global crops (scale (min_scale, 1); None: the paper's 0.14) and local crops (scale
    (0.05, min_scale))."""
    min_scale = 0.14 if min_scale is None else min_scale
    return swav_multi_crop_collator(
        global_size=image_size, local_size=local_size or dino_local_size(image_size), num_local_crops=num_local_crops,
        global_scale=(min_scale, 1.0), local_scale=(0.05, min_scale), mean=mean, std=std, seed=seed,
    )  # fmt: skip


METHODS: dict[str, SSLMethod] = {
    "simclr": SSLMethod("SimCLR", SimCLRConfig, SimCLRModel, SimCLRTrainer, two_views(DataCollatorForMultiView.simclr)),
    "moco": SSLMethod("MoCo", MoCoConfig, MoCoModel, MoCoTrainer, two_views(DataCollatorForMultiView.moco_v2)),
    "byol": SSLMethod("BYOL", BYOLConfig, BYOLModel, BYOLTrainer, two_views(DataCollatorForMultiView.byol)),
    "simsiam": SSLMethod("SimSiam", SimSiamConfig, SimSiamModel, SimSiamTrainer, two_views(DataCollatorForMultiView.moco_v2)),
    "barlow_twins": SSLMethod(
        "Barlow Twins", BarlowTwinsConfig, BarlowTwinsModel, BarlowTwinsTrainer, two_views(DataCollatorForMultiView.byol)
    ),
    "vicreg": SSLMethod("VICReg", VICRegConfig, VICRegModel, VICRegTrainer, two_views(DataCollatorForMultiView.byol)),
    "dino": SSLMethod("DINO", DINOConfig, DINOModel, DINOTrainer, dino_crops),
    "swav": SSLMethod("SwAV", SwAVConfig, SwAVModel, SwAVTrainer, swav_crops),
}

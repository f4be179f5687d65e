"""The image SSL methods by name: each one's config, model, trainer and paper augmentation preset, for recipes and
benchmarks that take `--method`; and what a `--method` recipe needs from them: the method by name, its config fields
as `HfArgumentParser` arguments (flags, YAML keys, `--help`), the config built from them, and its views."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

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
from hfssl.trainers.dino import DINOTrainer
from hfssl.trainers.moco import MoCoTrainer
from hfssl.trainers.redundancy import BarlowTwinsTrainer, VICRegTrainer
from hfssl.trainers.simclr import SimCLRTrainer
from hfssl.trainers.swav import SwAVTrainer


@dataclass(frozen=True)
class SSLMethod:
    """One method: `name` (for model cards), its config / model / trainer classes, and `collator(config,
    image_size=..., min_scale=..., local_size=..., num_local_crops=..., mean=..., std=..., seed=...)` building its
    paper's views (`min_scale=None`: the paper's crop scale; SimCLR also takes `strength`)."""

    name: str
    config_class: type
    model_class: type
    trainer_class: type
    collator: Callable[..., DataCollatorForMultiView]

    def title(self, config: PretrainedConfig) -> str:
        """The method's name for a model card: with its variant when the config has one ("MoCo v3")."""
        variant = getattr(config, "variant", None)
        return f"{self.name} {variant}" if variant else self.name


def two_views(preset: Callable[..., DataCollatorForMultiView], **fixed: Any) -> Callable[..., DataCollatorForMultiView]:
    """A collator builder for a two-view preset; the multi-crop arguments are ignored."""

    def build(config: Any, image_size: int, min_scale: float | None, mean: Any, std: Any, seed: int | None = None,
              **multi_crop: Any) -> DataCollatorForMultiView:  # fmt: skip
        scale = {} if min_scale is None else {"min_scale": min_scale}  # None: the preset's paper value
        return preset(image_size=image_size, mean=mean, std=std, seed=seed, **scale, **fixed)

    return build


def simclr_two_views(config: Any, image_size: int, strength: float | None = None, **options: Any):
    """SimCLR's views: colour-jitter `strength` (None: 1.0) and blur p=0.5, or below 96 px the paper's CIFAR-10
    setting (appendix B.9): strength 0.5, no blur."""
    small = image_size < 96
    strength = (0.5 if small else 1.0) if strength is None else strength
    build = two_views(DataCollatorForMultiView.simclr, strength=strength, blur_p=0.0 if small else 0.5)
    return build(config, image_size, **options)


def moco_two_views(config: Any, **options: Any) -> DataCollatorForMultiView:
    """MoCo v2's views, or for `variant="v3"` BYOL's asymmetric ones (MoCo v3's main_moco.py follows BYOL's)."""
    preset = DataCollatorForMultiView.byol if config.variant == "v3" else DataCollatorForMultiView.moco_v2
    return two_views(preset)(config, **options)


def dino_crops(config: Any, image_size: int, min_scale: float | None, mean: Any, std: Any, seed: int | None = None,
               local_size: int | None = None, num_local_crops: int = 8, **options: Any) -> DataCollatorForMultiView:
    """DINO's multi-crop: 2 global crops (scale (min_scale, 1); None: the paper's 0.4) and local crops (scale
    (0.05, min_scale))."""
    min_scale = 0.4 if min_scale is None else min_scale
    return DataCollatorForMultiView.dino(
        global_size=image_size, local_size=local_size, num_local_crops=num_local_crops,
        global_scale=(min_scale, 1.0), local_scale=(0.05, min_scale), mean=mean, std=std, seed=seed,
    )  # fmt: skip


def swav_crops(config: Any, image_size: int, min_scale: float | None, mean: Any, std: Any, seed: int | None = None,
               local_size: int | None = None, num_local_crops: int = 6, **options: Any) -> DataCollatorForMultiView:
    """SwAV's multi-crop: 2 global crops (scale (min_scale, 1); None: the paper's 0.14) and local crops (scale
    (0.05, min_scale))."""
    min_scale = 0.14 if min_scale is None else min_scale
    return DataCollatorForMultiView.swav(
        global_size=image_size, local_size=local_size, num_local_crops=num_local_crops,
        global_scale=(min_scale, 1.0), local_scale=(0.05, min_scale), mean=mean, std=std, seed=seed,
    )  # fmt: skip


METHODS: dict[str, SSLMethod] = {
    "simclr": SSLMethod("SimCLR", SimCLRConfig, SimCLRModel, SimCLRTrainer, simclr_two_views),
    "moco": SSLMethod("MoCo", MoCoConfig, MoCoModel, MoCoTrainer, moco_two_views),
    "byol": SSLMethod("BYOL", BYOLConfig, BYOLModel, BYOLTrainer, two_views(DataCollatorForMultiView.byol)),
    "simsiam": SSLMethod(
        "SimSiam", SimSiamConfig, SimSiamModel, SimSiamTrainer, two_views(DataCollatorForMultiView.moco_v2)
    ),
    "barlow_twins": SSLMethod(
        "Barlow Twins", BarlowTwinsConfig, BarlowTwinsModel, BarlowTwinsTrainer, two_views(DataCollatorForMultiView.byol)
    ),
    "vicreg": SSLMethod("VICReg", VICRegConfig, VICRegModel, VICRegTrainer, two_views(DataCollatorForMultiView.byol)),
    "dino": SSLMethod("DINO", DINOConfig, DINOModel, DINOTrainer, dino_crops),
    "swav": SSLMethod("SwAV", SwAVConfig, SwAVModel, SwAVTrainer, swav_crops),
}

# Config fields a recipe sets to one epoch of its run when left at None: the papers freeze DINO's last layer and
# SwAV's prototypes for their first epoch (1250 and 313 steps are one ImageNet epoch at their batch sizes).
FROZEN_FOR_THE_FIRST_EPOCH = ("freeze_last_layer_steps", "freeze_prototypes_steps")


def method_named(name: str) -> SSLMethod:
    """The method `name` (a key of `METHODS`), or a ValueError listing them."""
    if name not in METHODS:
        raise ValueError(
            f"--method {name!r} is not supported; choose one of {', '.join(METHODS)} (MoCo v2 and v3: --method moco "
            "--variant v2 or v3)."
        )
    return METHODS[name]


def _value_types(annotation: Any) -> tuple:
    """(int,) for `int`, (int, NoneType) for `int | None`, ..."""
    origin = typing.get_origin(annotation)
    return typing.get_args(annotation) if origin is typing.Union or origin is types.UnionType else (annotation,)


def _field_types(config_class: type) -> dict[str, Any]:
    """The evaluated annotations of the fields `config_class` and its parents below `PretrainedConfig` declare."""
    hints: dict[str, Any] = {}
    for klass in reversed(config_class.__mro__[: config_class.__mro__.index(PretrainedConfig)]):
        hints.update(inspect.get_annotations(klass, eval_str=True))
    return hints


def _is_mapping(annotation: Any) -> bool:
    return any((typing.get_origin(kind) or kind) is dict for kind in _value_types(annotation))


def config_field_docs(config_class: type) -> dict[str, str]:
    """Each field's description in the `Args:` sections of `config_class`'s docstring and its parents'."""
    docs: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        entry = ""
        # an entry starts at 4 spaces and continues at 8, or on the next line when its names end with ","
        for line in inspect.cleandoc(vars(klass).get("__doc__") or "").splitlines() + [""]:
            if line.startswith("    ") and (line.startswith("        ") or entry.endswith(",")):
                entry += " " + line.strip()
                continue
            match = re.match(r"([\w, ]+|.*?\)): (.*)", entry)
            names, text = match.groups() if match else (entry.split(" (")[0], entry)
            docs.update(dict.fromkeys(re.findall(r"\w+", names), text))
            entry = line.strip() if line.startswith("    ") else ""
    return docs


def config_arguments(method: SSLMethod, exclude: Iterable[str] = ()) -> type:
    """A dataclass of the fields `method.config_class` adds to `PretrainedConfig` (less `exclude`, e.g. the backbone
    arguments a recipe declares itself), for `HfArgumentParser`: each field a flag and a recipe-file key, at the
    config's default and with its docstring as help. The fields of `FROZEN_FOR_THE_FIRST_EPOCH` default to None (one
    epoch, see `build_config`); dict fields take JSON on the command line. `--help` lists them under the config's
    name."""
    hints, docs = _field_types(method.config_class), config_field_docs(method.config_class)
    skip = {item.name for item in dataclasses.fields(PretrainedConfig)} | set(exclude)
    fields = []
    for item in dataclasses.fields(method.config_class):
        if item.name in skip:
            continue
        kind = next(kind for kind in _value_types(hints[item.name]) if kind is not type(None))
        kind = str if _is_mapping(hints[item.name]) else kind
        default = None if item.name in FROZEN_FOR_THE_FIRST_EPOCH else item.default
        metadata = {"help": docs.get(item.name, "")}
        if default != item.default:
            metadata["help"] += " None (here): the first epoch of the run."
        if kind is bool and default is None:
            metadata.update(nargs="?", const=True)  # `--symmetric` alone means true, as for the other bool fields
        fields.append((item.name, kind | None, dataclasses.field(default=default, metadata=metadata)))
    arguments = dataclasses.make_dataclass(f"{method.config_class.__name__}Arguments", fields)
    arguments._argument_group_name = f"{method.config_class.__name__} fields ({method.name})"
    return arguments


def build_config(method: SSLMethod, arguments: Any, steps_per_epoch: int, **values: Any) -> PretrainedConfig:
    """`method.config_class` from the parsed `config_arguments(method)` instance and `values` (e.g. the backbone
    arguments): JSON text of dict fields decoded, the fields of `FROZEN_FOR_THE_FIRST_EPOCH` left at None set to
    `steps_per_epoch`."""
    hints = _field_types(method.config_class)
    kwargs = {**vars(arguments), **values}
    for name, value in kwargs.items():
        if isinstance(value, str) and _is_mapping(hints[name]):
            kwargs[name] = json.loads(value)
        elif value is None and name in FROZEN_FOR_THE_FIRST_EPOCH:
            kwargs[name] = steps_per_epoch
    return method.config_class(**kwargs)


def build_collator(method: SSLMethod, config: PretrainedConfig, strength: float | None = None, **options: Any):
    """`method.collator(config, **options)`; `strength` (colour-jitter strength) is refused for methods other than
    SimCLR, whose presets fix their jitter."""
    if strength is not None and method.name != "SimCLR":
        raise ValueError(
            f"--strength {strength} is SimCLR's colour-jitter strength; {method.name} uses its paper's colour jitter. "
            "Drop --strength, or train --method simclr."
        )
    return method.collator(config, strength=strength, **options)

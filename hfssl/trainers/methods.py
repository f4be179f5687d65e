"""The image SSL methods by name, found through the Auto classes: `--method NAME` is the model whose config
`model_type` is `hfssl_NAME` and that declares `paper_views`; its trainer is the `SSLTrainer` subclass declared for it
(plain `SSLTrainer` when there is none). A new method is thus one model file (its config, model and Auto
registration) and a YAML. Also what a `--method` recipe needs: its config fields as `HfArgumentParser` arguments
(flags, YAML keys, `--help`) and the config built from them."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING

import hfssl.models  # noqa: F401  (registers hfssl's methods with the Auto classes)
import hfssl.trainers  # noqa: F401  (declares every method trainer, for `trainer_for`)
from hfssl.trainers.ssl_trainer import SSLTrainer

MODEL_TYPE_PREFIX = "hfssl_"


@dataclass(frozen=True)
class SSLMethod:
    """One method: `name` (paper casing) and its config, model and trainer classes."""

    name: str
    config_class: type
    model_class: type
    trainer_class: type

    def title(self, config: PretrainedConfig) -> str:
        """The method's name for a model card: with its variant when the config has one ("MoCo v3")."""
        return self.model_class.method_title(config)


def trainer_for(model_class: type) -> type:
    """The `SSLTrainer` subclass declared for `model_class` (`model_class = ...`), else `SSLTrainer` itself."""
    pending, found = list(SSLTrainer.__subclasses__()), []
    while pending:
        trainer = pending.pop()
        pending += trainer.__subclasses__()
        if getattr(trainer, "model_class", None) is model_class:
            found.append(trainer)
    return min(found, key=lambda trainer: len(trainer.__mro__)) if found else SSLTrainer


def image_methods() -> dict[str, SSLMethod]:
    """Every registered image method by name (`hfssl_NAME` configs whose `AutoModel` class declares `paper_views`)."""
    methods = {}
    for model_type in CONFIG_MAPPING.keys():
        if not model_type.startswith(MODEL_TYPE_PREFIX):
            continue
        config_class = CONFIG_MAPPING[model_type]
        model_class = MODEL_MAPPING[config_class] if config_class in MODEL_MAPPING else None
        if model_class is not None and getattr(model_class, "paper_views", None):
            name = model_type.removeprefix(MODEL_TYPE_PREFIX)
            methods[name] = SSLMethod(model_class.method_name, config_class, model_class, trainer_for(model_class))
    return dict(sorted(methods.items()))


def method_named(name: str) -> SSLMethod:
    """The image method `name` (`image_methods`), or a ValueError listing them."""
    methods = image_methods()
    if name not in methods:
        raise ValueError(
            f"--method {name!r} is not supported; choose one of {', '.join(methods)} (MoCo v2 and v3: --method moco "
            "--variant v2 or v3)."
        )
    return methods[name]


# Config fields a recipe sets to one epoch of its run when left at None: the papers freeze DINO's last layer and
# SwAV's prototypes for their first epoch (1250 and 313 steps are one ImageNet epoch at their batch sizes).
FROZEN_FOR_THE_FIRST_EPOCH = ("freeze_last_layer_steps", "freeze_prototypes_steps")


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

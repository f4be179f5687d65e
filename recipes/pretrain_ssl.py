"""Image self-supervised pretraining with any hfssl method, of any timm or transformers backbone: BYOL, SimSiam, DINO,
SwAV, Barlow Twins, VICReg (and SimCLR, MoCo, which also have their own recipes with method-specific flags).

    accelerate launch recipes/pretrain_ssl.py --method byol                  # built-in digits, minutes on 2 CPUs
    accelerate launch recipes/pretrain_ssl.py --method dino --config_overrides "out_dim=4096" --num_local_crops 6
    accelerate launch recipes/pretrain_ssl.py recipes/configs/byol_tiny.yaml
    accelerate launch --num_processes 8 recipes/pretrain_ssl.py --method vicreg --backbone_name resnet50 \
        --train_dir /data/imagenet/train --image_size 224 --lars --learning_rate 0.3 --per_device_train_batch_size 256

--method picks the model (its config holds the paper's defaults; --config_overrides "name=value,..." changes any field),
its trainer (schedules, teacher updates, prototype or last-layer freezing) and its paper's augmentation preset at
--image_size, crop scales included unless --min_scale is given (DINO / SwAV: 2 global crops at --image_size and
--num_local_crops local crops at --local_size). An unknown --config_overrides name is refused, listing the fields.
--method dino trains with `DINOTrainingArguments`' defaults (main_dino.py: AdamW 5e-4 for batch 256, weight decay
0.04 -> 0.4 on a cosine schedule via --weight_decay_final, gradient clipping at 3.0 per parameter); the other
methods with `SSLTrainingArguments` (no clipping) and this recipe's AdamW 1e-3.
Images come from --dataset_name, --train_dir or, by default, scikit-learn's bundled digits upsampled to --image_size.
At the end: the model in --output_dir (`AutoModel.from_pretrained` after `import hfssl`), the backbone's kNN top-1 when
the data has labels, and --output_dir/export (the encoder in timm / transformers format, a model card, the full model)
that --push_to_hub uploads. Collapse signals are logged at each logging step (`--collapse_action stop` to end a
collapsed run).
"""

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field

import yaml
from transformers import PretrainedConfig

from hfssl.data.images import ImageDataArguments
from hfssl.distributed import end_processes
from hfssl.recipe_arguments import parse_recipe_arguments
from hfssl.recipe_vision import BackboneArguments, check_push_possible, train_evaluate_export
from hfssl.trainers import SSLTrainingArguments
from hfssl.trainers.dino import DINOTrainingArguments
from hfssl.trainers.methods import METHODS


@dataclass
class ModelArguments(BackboneArguments):
    method: str = field(default="byol", metadata={"help": f"One of {', '.join(METHODS)}."})
    config_overrides: str | None = field(
        default=None, metadata={"help": 'Model config fields to change, e.g. "projection_dim=256,momentum=0.99".'}
    )


@dataclass
class DataArguments(ImageDataArguments):
    min_scale: float | None = field(
        default=None,
        metadata={"help": "Crop lower scale (global crops for DINO / SwAV); default: the method's paper preset."},
    )
    local_size: int | None = field(default=None, metadata={"help": "DINO / SwAV local crop side (None: 3/7 of it)."})
    num_local_crops: int = field(default=4, metadata={"help": "DINO / SwAV local crops (papers: 6-10)."})


@dataclass
class PretrainingArguments(SSLTrainingArguments):
    """SSLTrainingArguments with a short default run on the built-in digits."""

    output_dir: str | None = field(default="outputs/pretrain_ssl")
    max_steps: int = field(default=60)
    per_device_train_batch_size: int = field(default=64)
    learning_rate: float = field(default=1e-3)
    weight_decay: float = field(default=1e-4)
    warmup_steps: float = field(default=5)
    lr_scheduler_type: str = field(default="cosine")
    logging_steps: float = field(default=10)
    save_strategy: str = field(default="no")


@dataclass
class DINOPretrainingArguments(DINOTrainingArguments):
    """DINOTrainingArguments (main_dino.py's learning rate, weight-decay schedule and clipping) with the same short
    default run on the built-in digits."""

    output_dir: str | None = field(default="outputs/pretrain_ssl")
    max_steps: int = field(default=60)
    per_device_train_batch_size: int = field(default=64)
    warmup_steps: float = field(default=5)
    logging_steps: float = field(default=10)
    save_strategy: str = field(default="no")


def requested_method(argv: list[str] | None) -> str:
    """The --method of a command line or a .yaml / .json recipe file (before the full parse, which depends on it)."""
    argv = sys.argv[1:] if argv is None else argv
    default = ModelArguments.method
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        with open(argv[0]) as handle:
            loaded = json.load(handle) if argv[0].endswith(".json") else yaml.safe_load(handle)
        return str((loaded or {}).get("method", default))
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--method", default=default)
    return parser.parse_known_args(argv)[0].method


def config_field_names(config_class: type) -> list[str]:
    """The fields a config class and its hfssl parents declare (what --config_overrides may set)."""
    names: dict[str, None] = {}
    for klass in config_class.__mro__:
        if klass is PretrainedConfig:
            break
        names.update(dict.fromkeys(vars(klass).get("__annotations__", {})))
    return sorted(names)


def parse_overrides(text: str | None) -> dict:
    """"a=1,b=0.5,c=true,d=name" -> {"a": 1, "b": 0.5, "c": True, "d": "name"} (Python literals, else strings)."""
    overrides = {}
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            raise ValueError(f'--config_overrides item {item!r} is not name=value; e.g. "projection_dim=256,momentum=0.99".')
        name, value = (part.strip() for part in item.split("=", 1))
        value = {"true": "True", "false": "False", "none": "None"}.get(value.lower(), value)
        try:
            overrides[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[name] = value
    return overrides


def main(argv: list[str] | None = None) -> dict:
    training_class = DINOPretrainingArguments if requested_method(argv) == "dino" else PretrainingArguments
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, training_class), argv)
    if model_args.method not in METHODS:
        raise ValueError(f"--method {model_args.method!r} is not supported; choose one of {', '.join(METHODS)}.")
    method, overrides = METHODS[model_args.method], parse_overrides(model_args.config_overrides)
    known = config_field_names(method.config_class)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(
            f"--config_overrides: {method.config_class.__name__} has no field(s) {', '.join(unknown)}; its fields: "
            f"{', '.join(known)}. Data options (crops, sizes) are flags of their own, e.g. --num_local_crops."
        )
    train = data_args.load()
    # DINO freezes its head's last layer, SwAV its prototypes, for the first epoch (the papers' 1250 and 313 steps are
    # one ImageNet epoch at their batch sizes): one epoch of this run unless overridden.
    for name in ("freeze_last_layer_steps", "freeze_prototypes_steps"):
        if name in method.config_class.__annotations__ and name not in overrides:
            batch = training_args.per_device_train_batch_size * training_args.world_size
            overrides[name] = len(train) // (batch * training_args.gradient_accumulation_steps)
    config = method.config_class(**model_args.config_kwargs(), **overrides)
    model = method.model_class(config)
    check_push_possible(model, training_args, model_args.export_encoder)
    data_config = model.backbone.data_config
    collator = method.collator(
        image_size=data_args.image_size, min_scale=data_args.min_scale, local_size=data_args.local_size,
        num_local_crops=data_args.num_local_crops, mean=data_config["mean"], std=data_config["std"],
        seed=training_args.seed,
    )  # fmt: skip
    data_args.configure_collator(collator)
    trainer = method.trainer_class(model=model, args=training_args, data_collator=collator, train_dataset=train)
    return train_evaluate_export(trainer, data_args, method=method.name, encoder=model_args.export_encoder)


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

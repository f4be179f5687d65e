"""Image self-supervised pretraining of any timm or transformers backbone with any hfssl method: SimCLR, MoCo v2 / v3,
BYOL, SimSiam, DINO, SwAV, Barlow Twins, VICReg.

    accelerate launch recipes/pretrain_ssl.py --method byol                    # built-in digits, minutes on 2 CPUs
    accelerate launch recipes/pretrain_ssl.py --method moco --variant v3 --batch_norm_splits 4
    accelerate launch recipes/pretrain_ssl.py --method dino --help             # DINOConfig's fields are flags too
    accelerate launch recipes/pretrain_ssl.py recipes/configs/simclr.yaml --max_steps 5   # a paper's settings
    accelerate launch --num_processes 8 recipes/pretrain_ssl.py recipes/configs/vicreg.yaml \
        --train_dir /data/imagenet/train --image_size 224 --backbone_name resnet50

--method picks the model, its trainer (schedules, teacher updates, prototype or last-layer freezing) and its paper's
augmentation preset at --image_size (crop scales unless --min_scale is given; DINO / SwAV add local crops). Every
field of the method's config (`SimCLRConfig`, `MoCoConfig`, ...) is a flag and a YAML key, at the paper's default.
recipes/configs/ holds each paper's training settings (simclr.yaml, moco_v3.yaml, ...). Without a file: a short run of
`PretrainingArguments` below (AdamW 1e-3), or for DINO of `DINOTrainingArguments`' main_dino.py settings (AdamW 5e-4,
weight decay 0.04 -> 0.4, clipping 3.0). Collapse signals are logged at each logging step (`--collapse_action stop`
ends a collapsed run).
Images come from --dataset_name, --train_dir or, by default, scikit-learn's bundled digits upsampled to --image_size.
At the end: the model in --output_dir (`AutoModel.from_pretrained` after `import hfssl`), the backbone's kNN top-1 when
the data has labels, and --output_dir/export (the encoder in timm / transformers format, a model card, the full model)
that --push_to_hub uploads. A rerun of the same command resumes from the last checkpoint in --output_dir.
"""

import sys
from dataclasses import dataclass, field, fields

from hfssl.data.images import ImageDataArguments
from hfssl.distributed import end_processes
from hfssl.cli import (
    BackboneArguments, check_push_possible, parse_recipe_arguments, requested_method, train_evaluate_export,
)  # fmt: skip
from hfssl.trainers import SSLTrainingArguments
from hfssl.trainers.dino import DINOTrainingArguments
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.evaluation.callbacks import add_knn_evaluation
from hfssl.trainers.methods import build_config, config_arguments, image_methods, method_named


@dataclass
class ModelArguments(BackboneArguments):
    method: str = field(default="byol", metadata={"help": f"One of {', '.join(image_methods())}."})


@dataclass
class DataArguments(ImageDataArguments):
    min_scale: float | None = field(
        default=None,
        metadata={"help": "Crop lower scale (global crops for DINO / SwAV); default: the method's paper preset."},
    )
    local_size: int | None = field(default=None, metadata={"help": "DINO / SwAV local crop side (None: 3/7 of it)."})
    num_local_crops: int = field(default=4, metadata={"help": "DINO / SwAV local crops (papers: 6-10)."})
    strength: float | None = field(
        default=None,
        metadata={"help": "SimCLR's colour-jitter strength (None: 1.0, or below 96 px the paper's CIFAR-10 0.5)."},
    )


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


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    method = method_named(requested_method(argv, default=ModelArguments.method))
    training_class = DINOPretrainingArguments if method.name == "DINO" else PretrainingArguments
    config_class_arguments = config_arguments(method, exclude=[item.name for item in fields(ModelArguments)])
    model_args, data_args, training_args, config_args = parse_recipe_arguments(
        (ModelArguments, DataArguments, training_class, config_class_arguments), argv
    )
    train = data_args.load()
    batch = training_args.per_device_train_batch_size * training_args.world_size
    epoch = len(train) // (batch * training_args.gradient_accumulation_steps)  # optimizer steps
    config = build_config(method, config_args, steps_per_epoch=epoch, **model_args.config_kwargs())
    model = method.model_class(config)
    check_push_possible(model, training_args, model_args.export_encoder)
    data_config = model.backbone.data_config
    collator = DataCollatorForMultiView.paper_views(
        method.model_class.views_for(config), data_args.image_size, min_scale=data_args.min_scale,
        strength=data_args.strength, local_size=data_args.local_size, num_local_crops=data_args.num_local_crops,
        mean=data_config["mean"], std=data_config["std"], seed=training_args.seed,
    )
    data_args.configure_collator(collator)
    trainer = method.trainer_class(model=model, args=training_args, data_collator=collator, train_dataset=train)
    add_knn_evaluation(trainer, data_args, encoder=model_args.export_encoder)  # with --knn_eval_steps N
    return train_evaluate_export(trainer, data_args, method=method.title(config), encoder=model_args.export_encoder)


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

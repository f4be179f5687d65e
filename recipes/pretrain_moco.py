"""MoCo v2 / v3 pretraining (Chen et al., 2020 and 2021) of any timm or transformers backbone with hfssl's MoCoTrainer.

    accelerate launch recipes/pretrain_moco.py                                   # built-in digits, minutes on 2 CPUs
    accelerate launch recipes/pretrain_moco.py recipes/configs/moco_tiny.yaml
    accelerate launch --num_processes 8 recipes/pretrain_moco.py --backbone_name resnet50 --train_dir /data/imagenet/train \
        --image_size 224 --variant v3 --lars --learning_rate 2.4 --per_device_train_batch_size 512

Images come from --dataset_name (Hub id or local path), --train_dir (image folder) or, by default, scikit-learn's
bundled digits upsampled to --image_size. The momentum teacher (and v2's queue) are updated after each optimizer step
and saved in checkpoints. At the end the model is saved to --output_dir (`AutoModel.from_pretrained` reads it once
`import hfssl` ran) and, when the data has labels, the weighted-kNN top-1 (k=200, cosine, T=0.1) of the backbone is
printed. Then --output_dir/export receives what --push_to_hub (--hub_model_id) uploads: the encoder in its library's
own format (timm or transformers, loadable without hfssl), a model card (README.md), and the full model in ssl_model/.
"""

from dataclasses import dataclass, field

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.data.images import ImageDataArguments
from hfssl.distributed import end_processes
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.recipe_arguments import parse_recipe_arguments
from hfssl.recipe_vision import BackboneArguments, check_push_possible, train_evaluate_export
from hfssl.trainers import MoCoTrainer, SSLTrainingArguments


@dataclass
class ModelArguments(BackboneArguments):
    variant: str = field(default="v2", metadata={"help": "v2 (queue) or v3 (predictor, symmetric, no queue)."})
    projection_hidden_dim: int | None = field(default=None, metadata={"help": "None: the variant's paper value."})
    projection_dim: int | None = None
    queue_size: int | None = field(default=None, metadata={"help": "v2 only: queue (paper: 65536; None: 4096 for small data)."})
    temperature: float | None = field(default=None, metadata={"help": "None: v2 0.2, v3 1.0."})
    symmetric: bool | None = None
    negative_sampling: str = field(default="uniform", metadata={"help": "uniform, debiased, hard, hardest or mixed."})
    batch_norm_splits: int = field(default=1, metadata={"help": "shuffle BN in each process: BatchNorm statistics over this "
                                   "many groups of the batch, the teacher's input shuffled (e.g. 4 or 8; 1: off)."})

    def __post_init__(self) -> None:
        if self.variant == "v3" and self.queue_size:
            raise ValueError(
                f"--queue_size {self.queue_size} is not used by --variant v3 (no queue: its negatives are the batch's "
                "other keys); drop --queue_size, or use --variant v2 for a queue of negatives."
            )
        if self.variant == "v2" and self.queue_size is None:
            self.queue_size = 4096


@dataclass
class MoCoTrainingArguments(SSLTrainingArguments):
    """SSLTrainingArguments with a short default run on the built-in digits."""

    output_dir: str | None = field(default="outputs/pretrain_moco")
    max_steps: int = field(default=60)
    per_device_train_batch_size: int = field(default=64)
    learning_rate: float = field(default=0.3)
    lars: bool = field(default=True)
    weight_decay: float = field(default=1e-6)
    warmup_steps: float = field(default=5)
    lr_scheduler_type: str = field(default="cosine")
    logging_steps: float = field(default=10)
    save_strategy: str = field(default="no")


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, ImageDataArguments, MoCoTrainingArguments))
    model = MoCoModel(MoCoConfig(
        **model_args.config_kwargs(), projection_hidden_dim=model_args.projection_hidden_dim,
        projection_dim=model_args.projection_dim, temperature=model_args.temperature, variant=model_args.variant,
        queue_size=model_args.queue_size, symmetric=model_args.symmetric,
        negative_sampling=model_args.negative_sampling, batch_norm_splits=model_args.batch_norm_splits,
    ))  # fmt: skip
    check_push_possible(model, training_args, model_args.export_encoder)
    data_config = model.backbone.data_config
    collator = DataCollatorForMultiView.moco_v2(
        image_size=data_args.image_size, min_scale=data_args.min_scale, mean=data_config["mean"], std=data_config["std"],
        seed=training_args.seed,
    )
    data_args.configure_collator(collator)
    trainer = MoCoTrainer(model=model, args=training_args, data_collator=collator, train_dataset=data_args.load())
    train_evaluate_export(trainer, data_args, method=f"MoCo {model.config.variant}", encoder=model_args.export_encoder)


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

"""SimCLR pretraining (Chen et al., 2020) of any timm or transformers backbone with hfssl's SimCLRTrainer.

    accelerate launch recipes/pretrain_simclr.py                                   # built-in digits, minutes on 2 CPUs
    accelerate launch recipes/pretrain_simclr.py recipes/configs/simclr_tiny.yaml
    accelerate launch --num_processes 8 recipes/pretrain_simclr.py --backbone_name resnet50 --train_dir /data/imagenet/train \
        --image_size 224 --lars --learning_rate 4.8 --per_device_train_batch_size 512 --temperature 0.1

Images come from --dataset_name (Hub id or local path), --train_dir (image folder) or, by default, scikit-learn's
bundled digits upsampled to --image_size. With several processes the NT-Xent negatives are gathered across them.
At the end the model is saved to --output_dir (`AutoModel.from_pretrained` reads it once `import hfssl` ran) and,
when the data has labels, the weighted-kNN top-1 (k=200, cosine, T=0.1) of the backbone is printed. Then
--output_dir/export receives what --push_to_hub (--hub_model_id) uploads: the encoder in its library's own format
(timm or transformers, loadable without hfssl), a model card (README.md), and the full model in ssl_model/.
"""

from dataclasses import dataclass, field

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.data.images import ImageDataArguments
from hfssl.distributed import end_processes
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.recipe_arguments import parse_recipe_arguments
from hfssl.recipe_vision import BackboneArguments, check_push_possible, train_evaluate_export
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments


@dataclass
class ModelArguments(BackboneArguments):
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    temperature: float = field(default=0.5, metadata={"help": "NT-Xent temperature (SimCLR: 0.5 at batch 256)."})
    negative_sampling: str = field(default="uniform", metadata={"help": "uniform, debiased, hard, hardest or mixed."})


@dataclass
class DataArguments(ImageDataArguments):
    strength: float = field(default=0.5, metadata={"help": "Colour-jitter strength (paper: 1.0; 0.5 on CIFAR)."})


@dataclass
class SimCLRTrainingArguments(SSLTrainingArguments):
    """SSLTrainingArguments with a short default run on the built-in digits."""

    output_dir: str | None = field(default="outputs/pretrain_simclr")
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
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, SimCLRTrainingArguments))
    model = SimCLRModel(SimCLRConfig(
        **model_args.config_kwargs(), projection_hidden_dim=model_args.projection_hidden_dim,
        projection_dim=model_args.projection_dim, temperature=model_args.temperature,
        negative_sampling=model_args.negative_sampling,
    ))  # fmt: skip
    check_push_possible(model, training_args, model_args.export_encoder)
    data_config = model.backbone.data_config
    collator = DataCollatorForMultiView.simclr(
        image_size=data_args.image_size, strength=data_args.strength, blur_p=0.0 if data_args.image_size < 96 else 0.5,
        min_scale=data_args.min_scale, mean=data_config["mean"], std=data_config["std"], seed=training_args.seed,
    )
    data_args.configure_collator(collator)
    trainer = SimCLRTrainer(model=model, args=training_args, data_collator=collator, train_dataset=data_args.load())
    train_evaluate_export(trainer, data_args, method="SimCLR", encoder=model_args.export_encoder)


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

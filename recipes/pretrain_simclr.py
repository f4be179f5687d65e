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

import logging, os, sys  # noqa: E401
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.data.images import load_image_dataset
from hfssl.evaluation.features import knn_evaluate
from hfssl.export import native_export_problem, save_backbone
from hfssl.hub import push_folder_to_hub, write_ssl_model_card
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    backbone_name: str = field(default="resnet18", metadata={"help": "timm name, Hub id or local folder."})
    backbone_pretrained: bool = False
    small_image_stem: bool = field(default=False, metadata={"help": "3x3 stride-1 stem, no max-pool (28-64 px)."})
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    temperature: float = field(default=0.5, metadata={"help": "NT-Xent temperature (SimCLR: 0.5 at batch 256)."})
    negative_sampling: str = field(default="uniform", metadata={"help": "uniform, debiased, hard, hardest or mixed."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or local path (save_to_disk folder)."})
    dataset_config_name: str | None = None
    train_dir: str | None = field(default=None, metadata={"help": "Folder of images (imagefolder)."})
    builtin: str = field(default="digits", metadata={"help": "Offline default: digits or fashion_mnist."})
    image_column: str | None = None
    image_size: int = 32
    min_scale: float = field(default=0.2, metadata={"help": "RandomResizedCrop lower scale (paper: 0.08)."})
    strength: float = field(default=0.5, metadata={"help": "Colour-jitter strength (paper: 1.0; 0.5 on CIFAR)."})
    max_train_samples: int | None = None


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
    parser = HfArgumentParser((ModelArguments, DataArguments, SimCLRTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith((".yaml", ".yml", ".json")):
        read = parser.parse_json_file if sys.argv[1].endswith(".json") else parser.parse_yaml_file
        model_args, data_args, training_args = read(sys.argv[1])
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    source = dict(dataset_name=data_args.dataset_name, train_dir=data_args.train_dir, builtin=data_args.builtin,
                  image_size=data_args.image_size, dataset_config_name=data_args.dataset_config_name,
                  image_column=data_args.image_column)
    train = load_image_dataset(**source, split="train", max_samples=data_args.max_train_samples)
    model = SimCLRModel(SimCLRConfig(
        backbone_name=model_args.backbone_name, backbone_pretrained=model_args.backbone_pretrained,
        small_image_stem=model_args.small_image_stem, projection_hidden_dim=model_args.projection_hidden_dim,
        projection_dim=model_args.projection_dim, temperature=model_args.temperature,
        negative_sampling=model_args.negative_sampling,
    ))
    export_problem = native_export_problem(model.backbone)  # e.g. a small-image stem plain timm cannot rebuild
    if training_args.push_to_hub and export_problem:
        raise ValueError(export_problem)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed below: encoder, card, model
    data_config = model.backbone.data_config
    collator = DataCollatorForMultiView.simclr(
        image_size=data_args.image_size, strength=data_args.strength, blur_p=0.0 if data_args.image_size < 96 else 0.5,
        min_scale=data_args.min_scale, mean=data_config["mean"], std=data_config["std"], seed=training_args.seed,
    )
    trainer = SimCLRTrainer(model=model, args=training_args, data_collator=collator, train_dataset=train)
    trainer.train()
    trainer.save_model()

    if not trainer.is_world_process_zero():
        return
    evaluation = {}
    if "label" in train.column_names:
        try:
            test = load_image_dataset(**source, split="test")
        except ValueError:
            test = None
        if test is not None and "label" in test.column_names:
            accuracy = knn_evaluate(model.backbone, train, test, data_args.image_size, data_config["mean"], data_config["std"])
            evaluation["kNN top-1 (k=200, T=0.1)"] = accuracy
            logger.info("kNN top-1 (k=200, T=0.1): %.4f", accuracy)
            print(f"knn_top1={accuracy:.4f}")
    if export_problem:
        logger.warning("No native encoder export: %s", export_problem)
        return
    repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
    export_dir = save_backbone(model, os.path.join(training_args.output_dir, "export"), image_size=data_args.image_size)
    dataset = data_args.dataset_name or data_args.train_dir or f"hfssl's built-in {data_args.builtin} images"
    write_ssl_model_card(export_dir, trainer, method="SimCLR", dataset=dataset, evaluation=evaluation,
                         repo_id=repo_id if push_to_hub else None)
    print(f"Encoder, model card and full model exported to {export_dir}")
    if push_to_hub:
        print(f"Pushed: {push_folder_to_hub(export_dir, repo_id, training_args.hub_token, training_args.hub_private_repo)}")


if __name__ == "__main__":
    main()

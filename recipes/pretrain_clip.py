"""CLIP (Radford et al., 2021) or SigLIP (Zhai et al., 2023) image-text pretraining of any image and text towers.

    accelerate launch recipes/pretrain_clip.py                        # built-in digits + generated captions, 2 CPUs
    accelerate launch recipes/pretrain_clip.py recipes/configs/clip_tiny.yaml
    accelerate launch --num_processes 8 recipes/pretrain_clip.py --dataset_name <hub id or saved folder> \
        --caption_column caption --image_backbone vit_base_patch16_224 --text_model_name_or_path bert-base-uncased \
        --image_size 224 --max_length 77 --per_device_train_batch_size 256 --gradient_cache_chunk_size 64 --bf16

Pairs come from --dataset_name (Hub id or `save_to_disk` folder), --train_file (json/jsonl/csv/parquet whose image
column holds file paths, relative to the file) or, by default, scikit-learn's digits, each image captioned by the
class templates below ("a photo of a seven.", ...), of which the collator draws --captions_per_image per step. The
image tower is --image_backbone (timm name, Hub id or folder) or a ResNet of --preset size from scratch; the text tower
--text_model_name_or_path or a BERT of --preset size with a WordPiece tokenizer trained on the captions. With several
processes the negatives are gathered across them. At the end, on held-out images: zero-shot top-1 (labelled data)
and recall@1/5/10 both ways (class-level for generated captions), printed and written into the model card of
--output_dir/export, which also holds both towers (image_encoder/, text_encoder/) and the full model.
"""

import logging
import os
from dataclasses import dataclass, field

from transformers import BertConfig, ResNetConfig

from hfssl.augmentations.presets import ViewAugmentation
from hfssl.collators.image_text import DataCollatorForImageText, plain_view
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.data.image_text import CAPTION_TEMPLATES, CLASS_NAMES, load_image_text_pairs
from hfssl.data.text import train_wordpiece_tokenizer
from hfssl.distributed import end_processes
from hfssl.evaluation.zero_shot import encode_images, encode_texts, image_text_retrieval, zero_shot_classification
from hfssl.export import native_export_problem, save_towers
from hfssl.models.clip import DualEncoderConfig, DualEncoderModel
from hfssl.cli import parse_recipe_arguments
from hfssl.data.tokenizer_training import load_or_train_tokenizer
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.clip import DualEncoderTrainer

logger = logging.getLogger(__name__)
PRESETS = {"tiny": (64, 2, 2), "mini": (256, 4, 4), "small": (512, 4, 8), "base": (768, 12, 12)}  # hidden, layers, heads
TEMPLATES = CAPTION_TEMPLATES
USAGE = """import hfssl, torch
from transformers import AutoModel, AutoTokenizer
model, tokenizer = AutoModel.from_pretrained("{path}"), AutoTokenizer.from_pretrained("{path}")
texts = tokenizer(["a photo of a seven."], padding=True, return_tensors="pt")
text_embeddings = model.get_text_features(texts["input_ids"], texts["attention_mask"])
image_embeddings = model.get_image_features(torch.randn(1, 3, {size}, {size}))  # normalised images
# towers alone, without hfssl: AutoModel.from_pretrained("{path}", subfolder="image_encoder"), and "text_encoder\""""


@dataclass
class ModelArguments:
    image_backbone: str | None = field(default=None, metadata={"help": "timm name, Hub id or folder; else a ViT."})
    image_pretrained: bool = field(default=False, metadata={"help": "Start the image tower from pretrained weights."})
    small_image_stem: bool = field(default=False, metadata={"help": "3x3 stem for timm ResNets on small images."})
    text_model_name_or_path: str | None = field(default=None, metadata={"help": "Pretrained text encoder; else BERT."})
    preset: str = field(default="tiny", metadata={"help": f"Size of the towers from scratch: {', '.join(PRESETS)}."})
    text_pooling: str = field(default="cls", metadata={"help": "cls, mean or last."})
    projection_dim: int = field(default=64, metadata={"help": "Shared embedding dim (CLIP ViT-B: 512)."})
    loss: str = field(default="clip", metadata={"help": "clip (symmetric InfoNCE) or siglip (sigmoid)."})
    vocab_size: int = field(default=1000, metadata={"help": "Vocabulary of the trained tokenizer."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or save_to_disk folder of pairs."})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The dataset's configuration name (datasets.load_dataset's second argument)."}
    )
    train_file: str | None = field(default=None, metadata={"help": "json/jsonl/csv/parquet of (image path, caption)."})
    builtin: str = field(default="digits", metadata={"help": "Offline default: digits or fashion_mnist."})
    image_column: str = field(default="image", metadata={"help": "The column holding the images."})
    caption_column: str = field(default="caption", metadata={"help": "A caption or a list of captions per image."})
    captions_per_image: int = field(
        default=1, metadata={"help": "Captions drawn per image in a batch (K > 1: multi-positive loss)."}
    )
    image_size: int = field(default=32, metadata={"help": "Side of the square images the model trains on, in pixels."})
    min_scale: float = field(default=1.0, metadata={"help": "Random crop scale (1.0: a plain resize of the image)."})
    max_length: int = field(default=32, metadata={"help": "Caption tokens (CLIP: 77)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    eval_samples: int = field(default=500, metadata={"help": "Pairs held out from --dataset_name / --train_file."})


@dataclass
class CLIPTrainingArguments(SSLTrainingArguments):
    """A short run on the built-in digits (CLIP: AdamW, weight decay 0.2, cosine schedule with warmup)."""

    output_dir: str | None = field(default="outputs/pretrain_clip")
    max_steps: int = field(default=150)
    per_device_train_batch_size: int = field(default=64)
    learning_rate: float = field(default=1e-3)
    weight_decay: float = field(default=0.2)
    warmup_steps: float = field(default=10)
    lr_scheduler_type: str = field(default="cosine")
    logging_steps: float = field(default=25)
    save_strategy: str = field(default="no")


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, CLIPTrainingArguments))
    train, held_out = load_image_text_pairs(
        data_args.dataset_name, data_args.train_file, data_args.builtin, data_args.dataset_config_name,
        data_args.image_column, data_args.caption_column, data_args.image_size, data_args.eval_samples, training_args.seed,
    )  # fmt: skip
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    captions = [c for caption in train["caption"] for c in ([caption] if isinstance(caption, str) else caption)]
    tokenizer = load_or_train_tokenizer(model_args.text_model_name_or_path,
                                        lambda: train_wordpiece_tokenizer(captions, model_args.vocab_size), training_args)
    hidden, layers, heads = PRESETS[model_args.preset]
    image_config = None if model_args.image_backbone else ResNetConfig(  # a ViT this small does not learn here
        embedding_size=hidden // 4, hidden_sizes=[hidden // 4, hidden // 2, hidden], depths=[max(layers // 2, 1)] * 3,
        layer_type="basic").to_dict()  # fmt: skip
    text_config = None if model_args.text_model_name_or_path else BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=max(512, data_args.max_length),
        pad_token_id=tokenizer.pad_token_id).to_dict()  # fmt: skip
    model = DualEncoderModel(DualEncoderConfig(
        backbone_name=model_args.image_backbone, backbone_pretrained=model_args.image_pretrained,
        backbone_model_config=image_config, small_image_stem=model_args.small_image_stem, text_model_config=text_config,
        text_model_name=model_args.text_model_name_or_path, text_pretrained=model_args.text_model_name_or_path is not None,
        text_pooling=model_args.text_pooling, projection_dim=model_args.projection_dim, loss=model_args.loss))  # fmt: skip
    mean, std = model.image_encoder.data_config["mean"], model.image_encoder.data_config["std"]
    view = plain_view(data_args.image_size) if data_args.min_scale >= 1.0 else ViewAugmentation(
        size=data_args.image_size, scale=(data_args.min_scale, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0,
        blur_p=0.0)  # fmt: skip
    collator = DataCollatorForImageText(
        tokenizer, image_collator=DataCollatorForMultiView(views=[view], mean=mean, std=std),
        captions_per_image=data_args.captions_per_image, max_length=data_args.max_length, seed=training_args.seed)
    trainer = DualEncoderTrainer(model, args=training_args, data_collator=collator, train_dataset=train,
                                 processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model()  # DualEncoderModel and tokenizer: AutoModel.from_pretrained(output_dir) after `import hfssl`
    if not trainer.is_world_process_zero():
        return

    size, metrics = data_args.image_size, {}
    images = encode_images(model, held_out["image"], size, mean, std)
    if "label" in held_out.column_names and data_args.dataset_name is None and data_args.train_file is None:
        names = CLASS_NAMES[data_args.builtin]
        accuracy = zero_shot_classification(model, tokenizer, held_out["image"], held_out["label"], names, TEMPLATES,
                                            size, mean, std, max_length=data_args.max_length)  # fmt: skip
        metrics.update({f"zero-shot {name} ({len(names)} classes)": value for name, value in accuracy.items()})
        texts = encode_texts(model, tokenizer, [t.format(name) for name in names for t in TEMPLATES], data_args.max_length)
        text_labels = [label for label in range(len(names)) for _ in TEMPLATES]
        retrieval = image_text_retrieval(images, texts, image_labels=held_out["label"], text_labels=text_labels)
        metrics.update({f"class-level {name}": value for name, value in retrieval.items()})
    else:
        per_image = [[caption] if isinstance(caption, str) else caption for caption in held_out["caption"]]
        texts = encode_texts(model, tokenizer, [c for captions in per_image for c in captions], data_args.max_length)
        text_to_image = [index for index, captions in enumerate(per_image) for _ in captions]
        metrics.update(image_text_retrieval(images, texts, text_to_image=text_to_image))
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}")

    export_dir = os.path.join(training_args.output_dir, "export")
    if problem := native_export_problem(model.image_encoder):
        logger.warning("Only the full model is exported: %s", problem)
        model.save_pretrained(export_dir)
        tokenizer.save_pretrained(export_dir)
    else:
        save_towers(model, export_dir, tokenizer, image_size=size, mean=mean, std=std)
    method = "SigLIP (Zhai et al., 2023)" if model_args.loss == "siglip" else "CLIP (Radford et al., 2021)"
    trainer.create_model_card(
        folder=export_dir, method=f"Image-text contrastive ({method})",
        architecture=f"{type(model.image_encoder.model).__name__} + {type(model.text_encoder).__name__}",
        dataset=data_args.dataset_name or data_args.train_file or f"{data_args.builtin} with class-template captions",
        pipeline_tag="zero-shot-image-classification", metrics={**metrics, "held-out images": len(held_out)},
        usage=USAGE.replace("{size}", str(size)),
        hyperparameters={"loss": model_args.loss, "projection_dim": model_args.projection_dim,
                         "logit_scale": round(model.current_logit_scale().item(), 3), "image_size": size,
                         "captions_per_image": data_args.captions_per_image},
    )
    if training_args.push_to_hub:
        trainer.push_to_hub()
    print(f"Model, both towers and model card in {os.path.abspath(export_dir)}")


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

"""MAE pretraining (He et al., 2021) of a transformers ViTMAE with hfssl's DataCollatorForMaskedImageModeling.

    accelerate launch recipes/pretrain_mae.py                              # built-in digits, tiny ViT, minutes on 2 CPUs
    accelerate launch recipes/pretrain_mae.py recipes/configs/mae_tiny.yaml
    accelerate launch --num_processes 8 recipes/pretrain_mae.py recipes/configs/mae_vit_base.yaml   # set train_dir in it
On a busy shared CPU, prefix OMP_NUM_THREADS=1: tiny models gain nothing from intra-op threads that oversubscribe it.

Images come from --dataset_name (Hub id or local path), --train_dir (image folder) or, by default, scikit-learn's
bundled digits upsampled to --image_size. The collator draws each image's mask and passes the matching `noise`, so
the masks are reproducible from the seed. Outputs in --output_dir:
- the encoder as a transformers ViTModel (no pooler) holding the MAE encoder's weights, its fixed sin-cos position
  embeddings included: `AutoModel.from_pretrained(output_dir, add_pooling_layer=False)` sees every patch, without
  ViTMAE's random masking and token shuffle, so its features are deterministic with the patch tokens in image order
  (the same as the MAE encoder with mask_ratio=0 and `noise=torch.arange(L).expand(B, L)`). Without
  add_pooling_layer=False, AutoModel adds a freshly initialised pooler (`pooler_output`); `last_hidden_state` is the same;
- `pretraining/`: the full ViTMAEForPreTraining (decoder included) to resume from or visualise;
- `reconstructions.png`: rows of original | masked input | reconstruction | reconstruction with the visible patches.
  With --norm_pix_loss (the paper's default) the decoder predicts per-patch *normalised* pixels; the PNG un-normalises
  them with the true patch mean and variance, which the model never sees for masked patches, so it flatters them.
"""

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from transformers import (
    TrainingArguments,
    ViTConfig,
    ViTImageProcessor,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTModel,
)

from hfssl.collators.masked_image import DataCollatorForMaskedImageModeling
from hfssl.data.images import load_image_dataset
from hfssl.distributed import end_processes
from hfssl.cli import parse_recipe_arguments
from hfssl.trainers.safe_trainer import SafeTrainer

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "ViTMAE checkpoint; else from scratch."})
    image_size: int = field(default=32, metadata={"help": "Side of the square images the model trains on, in pixels."})
    patch_size: int = field(default=4, metadata={"help": "ViT patch side in pixels."})
    hidden_size: int = field(default=64, metadata={"help": "Encoder width (from scratch)."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Encoder depth (from scratch)."})
    num_attention_heads: int = field(default=4, metadata={"help": "Encoder attention heads (from scratch)."})
    decoder_hidden_size: int = field(default=64, metadata={"help": "MAE decoder width."})
    decoder_num_hidden_layers: int = field(default=2, metadata={"help": "MAE decoder depth."})
    mask_ratio: float = field(default=0.75, metadata={"help": "Fraction of patches masked (MAE: 0.75)."})
    norm_pix_loss: bool = field(default=True, metadata={"help": "Per-patch normalised pixel targets (MAE default)."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or local path (save_to_disk folder)."})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The dataset's configuration name (datasets.load_dataset's second argument)."}
    )
    train_dir: str | None = field(default=None, metadata={"help": "Folder of images (imagefolder)."})
    builtin: str = field(default="digits", metadata={"help": "Offline default: digits or fashion_mnist."})
    image_column: str | None = field(
        default=None, metadata={"help": "The column holding the images (default: the first Image column)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    crop_min_scale: float = field(default=0.2, metadata={"help": "RandomResizedCrop lower scale (MAE: 0.2)."})
    skip_invalid_images: bool = field(default=False, metadata={"help": "Skip unreadable images (count logged)."})
    num_reconstructions: int = field(default=8, metadata={"help": "Images in reconstructions.png."})


@dataclass
class MAETrainingArguments(TrainingArguments):
    """TrainingArguments with MAE's optimiser (AdamW, betas (0.9, 0.95), weight decay 0.05) and tiny-run defaults."""

    output_dir: str | None = field(default="outputs/pretrain_mae")
    max_steps: int = field(default=400)
    per_device_train_batch_size: int = field(default=64)
    learning_rate: float = field(default=1.5e-3)
    weight_decay: float = field(default=0.05)
    adam_beta2: float = field(default=0.95)
    warmup_steps: float = field(default=40)
    lr_scheduler_type: str = field(default="cosine")
    logging_steps: float = field(default=50)
    save_strategy: str = field(default="no")
    remove_unused_columns: bool = field(default=False)  # keep the image column for the collator


VIT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
              "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps", "image_size",
              "patch_size", "num_channels", "qkv_bias")  # the ViTConfig fields a ViTMAEConfig shares


def encoder_as_vit(model: ViTMAEForPreTraining) -> ViTModel:
    """The MAE encoder (`model.vit`) as a ViTModel without pooler: the same weights under the same names, the fixed
    position embeddings included (trainable in ViT, as in MAE's fine-tuning), and no masking or shuffling."""
    config = ViTConfig(**{name: getattr(model.config, name) for name in VIT_FIELDS}, encoder_stride=model.config.patch_size)
    encoder = ViTModel(config, add_pooling_layer=False)
    weights, expected = model.vit.state_dict(), encoder.state_dict()
    if weights.keys() != expected.keys() or any(weights[name].shape != expected[name].shape for name in weights):
        raise RuntimeError(f"ViTMAE and ViT weights differ: ViTMAE only {sorted(weights.keys() - expected.keys())}, "
                           f"ViT only {sorted(expected.keys() - weights.keys())}; the transformers version changed them.")
    encoder.load_state_dict(weights)
    return encoder.to(model.device)


def save_reconstructions(model: ViTMAEForPreTraining, collator, dataset, path: str, count: int) -> None:
    """Write a PNG grid: one column per image; rows original, masked input, reconstruction, pasted."""
    batch = collator([dataset[i] for i in range(min(count, len(dataset)))])
    pixels = batch["pixel_values"].to(model.device)
    model.eval()
    with torch.no_grad():
        output = model(pixel_values=pixels, noise=batch["noise"].to(model.device))
    prediction, patch_dim = output.logits, output.logits.shape[-1]
    if model.config.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
        target = model.patchify(pixels)
        prediction = prediction * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
    reconstruction = model.unpatchify(prediction)
    mask = model.unpatchify(output.mask.unsqueeze(-1).repeat(1, 1, patch_dim))
    rows = [pixels, pixels * (1 - mask), reconstruction, pixels * (1 - mask) + reconstruction * mask]
    mean, std = (torch.tensor(v, device=pixels.device).view(1, -1, 1, 1) for v in (collator.mean, collator.std))
    grid = torch.cat([torch.cat(list((row * std + mean).clamp(0, 1)), dim=2) for row in rows], dim=1)
    Image.fromarray((grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)).save(path)


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, MAETrainingArguments))

    dataset = load_image_dataset(
        data_args.dataset_name, data_args.train_dir, data_args.builtin, split="train", image_size=model_args.image_size,
        dataset_config_name=data_args.dataset_config_name, image_column=data_args.image_column,
        max_samples=data_args.max_train_samples, decode=False,  # decoded by the collator, which names a bad file
    ).select_columns(["image"])  # ViTMAE takes no labels
    if model_args.model_name_or_path is not None:
        model = ViTMAEForPreTraining.from_pretrained(model_args.model_name_or_path, mask_ratio=model_args.mask_ratio, norm_pix_loss=model_args.norm_pix_loss)
    else:
        config = ViTMAEConfig(
            image_size=model_args.image_size, patch_size=model_args.patch_size, hidden_size=model_args.hidden_size,
            num_hidden_layers=model_args.num_hidden_layers, num_attention_heads=model_args.num_attention_heads,
            intermediate_size=4 * model_args.hidden_size, decoder_hidden_size=model_args.decoder_hidden_size,
            decoder_num_hidden_layers=model_args.decoder_num_hidden_layers, decoder_intermediate_size=4 * model_args.decoder_hidden_size,
            decoder_num_attention_heads=max(1, model_args.decoder_hidden_size // 16),
            mask_ratio=model_args.mask_ratio, norm_pix_loss=model_args.norm_pix_loss,
        )
        model = ViTMAEForPreTraining(config)
    collator = DataCollatorForMaskedImageModeling.from_model_config(model.config, crop_scale=(data_args.crop_min_scale, 1.0), seed=training_args.seed + training_args.process_index,
                                                                 skip_invalid_images=data_args.skip_invalid_images)
    logger.info("%d images, %d of %d patches masked", len(dataset), collator.num_masked, collator.num_patches)

    trainer = SafeTrainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(os.path.join(training_args.output_dir, "pretraining"))

    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        encoder_as_vit(model).save_pretrained(training_args.output_dir)  # deterministic: no ViTMAE masking or shuffle
        ViTImageProcessor(size={"height": collator.image_size, "width": collator.image_size}, image_mean=list(collator.mean),
                          image_std=list(collator.std)).save_pretrained(training_args.output_dir)
        path = os.path.join(training_args.output_dir, "reconstructions.png")
        eval_collator = DataCollatorForMaskedImageModeling.from_model_config(model.config, crop_scale=(1.0, 1.0), flip_p=0.0, seed=0)
        save_reconstructions(model, eval_collator, dataset, path, data_args.num_reconstructions)
        trainer.create_model_card(
            method="MAE (masked autoencoder)",
            architecture="ViTModel (the MAE encoder, no pooler; the full ViTMAEForPreTraining in pretraining/)",
            pipeline_tag="image-feature-extraction", metrics={"train_loss": train_result.training_loss},
            dataset=data_args.dataset_name or data_args.train_dir or f"{data_args.builtin} (built-in)",
            hyperparameters={"mask_ratio": model_args.mask_ratio, "norm_pix_loss": model_args.norm_pix_loss,
                             "image_size": model_args.image_size, "patch_size": model_args.patch_size},
            usage='from transformers import AutoImageProcessor, AutoModel\n'
                  'encoder = AutoModel.from_pretrained("{path}", add_pooling_layer=False)  # a ViTModel\n'
                  'processor = AutoImageProcessor.from_pretrained("{path}")',
        )
        if training_args.push_to_hub:
            trainer.push_to_hub()
        print(f"\nEncoder saved to {os.path.abspath(training_args.output_dir)} (AutoModel.from_pretrained loads it); "
              f"final training loss {train_result.training_loss:.4f}; reconstructions in {path}")


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

"""MAE pretraining (He et al., 2021) of a transformers ViTMAE with hfssl's DataCollatorForMaskedImageModeling.

    accelerate launch recipes/pretrain_mae.py                        # built-in digits, tiny ViT, minutes on 2 CPUs
    accelerate launch recipes/pretrain_mae.py recipes/configs/mae_tiny.yaml
    accelerate launch --num_processes 8 recipes/pretrain_mae.py recipes/configs/mae_vit_base.yaml  # set train_dir
On a busy shared CPU, prefix OMP_NUM_THREADS=1: tiny models gain nothing from intra-op threads that oversubscribe it.

Images come from --dataset_name, --train_dir or, by default, scikit-learn's digits upsampled to --image_size. The
collator draws each image's mask and passes the matching `noise`, so the masks are reproducible from the seed.
Outputs in --output_dir:
- the encoder as a transformers ViTModel with its image processor (`hfssl.export.mae_encoder_as_vit`): the MAE
  encoder's weights without ViTMAE's random masking and token shuffle, so `AutoModel.from_pretrained(output_dir)`
  gives deterministic features of every patch in image order, and a pooler that is the identity on the [CLS] token
  (`pooler_output`, also what `pipeline("image-feature-extraction", pool=True)` returns);
- `pretraining/`: the full ViTMAEForPreTraining (decoder included) to resume from or visualise;
- `reconstructions.png`: rows of original | masked input | reconstruction | reconstruction with the visible patches.
  With --norm_pix_loss (the paper's default) the decoder predicts per-patch *normalised* pixels; the PNG un-normalises
  them with the true patch mean and variance, which the model never sees for masked patches, so it flatters them.
"""

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments, ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining

from hfssl.cli import parse_recipe_arguments
from hfssl.collators.masked_image import DataCollatorForMaskedImageModeling
from hfssl.data.images import ImageDataArguments
from hfssl.distributed import end_processes
from hfssl.evaluation.plots import plot_reconstructions
from hfssl.export import mae_encoder_as_vit
from hfssl.trainers.safe_trainer import SafeTrainer

logger = logging.getLogger(__name__)
USAGE = """from transformers import AutoImageProcessor, AutoModel
encoder = AutoModel.from_pretrained("{path}")  # a ViTModel: pooler_output is the [CLS] token
processor = AutoImageProcessor.from_pretrained("{path}")"""


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "ViTMAE checkpoint; else from scratch."})
    patch_size: int = field(default=4, metadata={"help": "ViT patch side in pixels."})
    hidden_size: int = field(default=64, metadata={"help": "Encoder width (from scratch)."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Encoder depth (from scratch)."})
    num_attention_heads: int = field(default=4, metadata={"help": "Encoder attention heads (from scratch)."})
    decoder_hidden_size: int = field(default=64, metadata={"help": "MAE decoder width."})
    decoder_num_hidden_layers: int = field(default=2, metadata={"help": "MAE decoder depth."})
    mask_ratio: float = field(default=0.75, metadata={"help": "Fraction of patches masked (MAE: 0.75)."})
    norm_pix_loss: bool = field(default=True, metadata={"help": "Per-patch normalised pixel targets (MAE default)."})


@dataclass
class DataArguments(ImageDataArguments):
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


def save_reconstructions(model: ViTMAEForPreTraining, collator, dataset, path: str, count: int) -> None:
    """Plot the first `count` images: original, masked input, reconstruction, reconstruction + visible patches."""
    batch = collator([dataset[i] for i in range(min(count, len(dataset)))])
    pixels = batch["pixel_values"].to(model.device)
    model.eval()
    with torch.no_grad():
        output = model(pixel_values=pixels, noise=batch["noise"].to(model.device))
    prediction = output.logits
    if model.config.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
        target = model.patchify(pixels)
        prediction = prediction * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
    reconstruction = model.unpatchify(prediction)
    mask = model.unpatchify(output.mask.unsqueeze(-1).expand_as(prediction))
    visible = pixels * (1 - mask)
    rows = {"original": pixels, "masked input": visible, "reconstruction": reconstruction,
            "visible + reconstructed": visible + reconstruction * mask}
    plot_reconstructions(rows, collator.mean, collator.std, path)


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, MAETrainingArguments))

    dataset = data_args.load("train").select_columns(["image"])  # undecoded: the collator names a bad file; no labels
    if model_args.model_name_or_path is not None:
        model = ViTMAEForPreTraining.from_pretrained(model_args.model_name_or_path, mask_ratio=model_args.mask_ratio,
                                                     norm_pix_loss=model_args.norm_pix_loss)
    else:
        hidden, decoder_hidden = model_args.hidden_size, model_args.decoder_hidden_size
        model = ViTMAEForPreTraining(ViTMAEConfig(
            image_size=data_args.image_size, patch_size=model_args.patch_size, hidden_size=hidden,
            num_hidden_layers=model_args.num_hidden_layers, num_attention_heads=model_args.num_attention_heads,
            intermediate_size=4 * hidden, decoder_hidden_size=decoder_hidden,
            decoder_num_hidden_layers=model_args.decoder_num_hidden_layers,
            decoder_intermediate_size=4 * decoder_hidden, decoder_num_attention_heads=max(1, decoder_hidden // 16),
            mask_ratio=model_args.mask_ratio, norm_pix_loss=model_args.norm_pix_loss,
        ))
    collator = data_args.configure_collator(DataCollatorForMaskedImageModeling.from_model_config(
        model.config, crop_scale=(data_args.min_scale, 1.0), seed=training_args.seed + training_args.process_index))
    logger.info("%d images, %d of %d patches masked", len(dataset), collator.num_masked, collator.num_patches)

    trainer = SafeTrainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(os.path.join(training_args.output_dir, "pretraining"))

    if trainer.is_world_process_zero():
        model, output_dir = trainer.accelerator.unwrap_model(trainer.model), training_args.output_dir
        mae_encoder_as_vit(model).save_pretrained(output_dir)  # deterministic: no ViTMAE masking or shuffle
        size = {"height": collator.image_size, "width": collator.image_size}
        processor = ViTImageProcessor(size=size, image_mean=list(collator.mean), image_std=list(collator.std))
        processor.save_pretrained(output_dir)
        path = os.path.join(output_dir, "reconstructions.png")
        eval_collator = data_args.configure_collator(DataCollatorForMaskedImageModeling.from_model_config(
            model.config, crop_scale=(1.0, 1.0), flip_p=0.0, seed=0))
        save_reconstructions(model, eval_collator, dataset, path, data_args.num_reconstructions)
        trainer.create_model_card(
            method="MAE (masked autoencoder)", pipeline_tag="image-feature-extraction", usage=USAGE,
            architecture="ViTModel (the MAE encoder, its pooler the identity on [CLS]; the full ViTMAEForPreTraining "
                         "in pretraining/)",
            metrics={"train_loss": train_result.training_loss}, dataset=data_args.describe(),
            hyperparameters={"mask_ratio": model.config.mask_ratio, "norm_pix_loss": model.config.norm_pix_loss,
                             "image_size": collator.image_size, "patch_size": collator.patch_size},
        )
        if training_args.push_to_hub:
            trainer.push_to_hub()
        print(f"\nEncoder saved to {os.path.abspath(output_dir)} (AutoModel.from_pretrained loads it); "
              f"final training loss {train_result.training_loss:.4f}; reconstructions in {path}")


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

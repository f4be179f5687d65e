"""`DualEncoderTrainer`: `SSLTrainer` for image-text contrastive training of `DualEncoderModel` (CLIP, SigLIP).

Legend: B images, K captions per image, n images in a chunk.

What it changes in `SSLTrainer`: batches hold one image tensor and captions instead of a list of views, and the
cached-gradient step (`gradient_cache_chunk_size`) cuts the batch into chunks of n images with their K * n captions.
"""

from __future__ import annotations

from typing import Any

import torch

from hfssl.collators.image_text import DataCollatorForImageText
from hfssl.models.clip import DualEncoderModel
from hfssl.trainers.ssl_trainer import SSLTrainer

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def split_image_text_batch(inputs: dict[str, Any], chunk_size: int) -> list[dict[str, torch.Tensor]]:
    """Cut a batch into chunks of `chunk_size` images with their captions (image-major rows, K per image).

    Args:
        inputs (`dict`): `pixel_values` (B, C, H, W) and `input_ids` / `attention_mask` (K * B, L).
        chunk_size (`int`): n.

    Returns:
        `list[dict]` of chunks with `pixel_values` (n, C, H, W) and the text tensors (K * n, L).
    """
    images = inputs["pixel_values"]
    captions_per_image = inputs["input_ids"].shape[0] // images.shape[0]
    chunks = [{"pixel_values": part} for part in images.split(chunk_size)]
    for key in TEXT_KEYS:
        if inputs.get(key) is not None:
            for chunk, part in zip(chunks, inputs[key].split(chunk_size * captions_per_image)):
                chunk[key] = part
    return chunks


class DualEncoderTrainer(SSLTrainer):
    """Train a `DualEncoderModel` (CLIP, SigLIP) on (image, caption) batches. `data_collator` defaults to a
    plain-resize `DataCollatorForImageText` at the image tower's input size and normalisation, tokenizing with
    `processing_class` (the captions' tokenizer, saved with the model); `gradient_cache_chunk_size` for large
    batches. Otherwise as `SSLTrainer`.
    """

    model_class = DualEncoderModel
    default_arguments = {"output_dir": "outputs/dual_encoder"}

    @classmethod
    def build_model(cls, model: Any) -> DualEncoderModel:
        """`model`, checked to be a `DualEncoderModel` (two towers: there is no single backbone name to build from)."""
        if not isinstance(model, DualEncoderModel):
            raise TypeError(f"DualEncoderTrainer needs a DualEncoderModel; got {type(model).__name__}.")
        return model

    collator_example = "DataCollatorForImageText(tokenizer, image_size={size})"

    def default_data_collator(
        self, model: DualEncoderModel, processing_class: Any = None, train_dataset: Any = None
    ) -> DataCollatorForImageText:
        """Image-caption batches with the image encoder's normalisation, at `default_view_size`."""
        if processing_class is None:
            raise ValueError(
                "DualEncoderTrainer needs a data_collator (DataCollatorForImageText) or a processing_class (the "
                "captions' tokenizer) to build the default one from."
            )
        data_config = model.image_encoder.data_config
        size = self.default_view_size(data_config, train_dataset)
        return DataCollatorForImageText(processing_class, image_size=size,
                                        mean=data_config["mean"], std=data_config["std"])  # fmt: skip

    @staticmethod
    def _check_inputs(inputs: dict[str, Any]) -> None:
        missing = [key for key in ("pixel_values", "input_ids") if key not in inputs]
        if missing or not isinstance(inputs["pixel_values"], torch.Tensor):
            raise ValueError(
                f"DualEncoderTrainer expects batches with 'pixel_values' (one tensor of images) and 'input_ids' (the "
                f"captions); got keys {sorted(inputs)}. Use DataCollatorForImageText."
            )

    def gradient_cache_chunks(self, inputs: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """Chunks of `args.gradient_cache_chunk_size` images with their captions (`split_image_text_batch`)."""
        return split_image_text_batch(inputs, self.args.gradient_cache_chunk_size)

"""`DataCollatorForImageText`: (image, captions) examples -> one view per image and K sampled captions, tokenized.

CLIP trains on one random crop of each image and, where an image has several captions (COCO: 5), one caption drawn
at random each time the image is seen; both are drawn from one seeded `torch.Generator`, the captions first.

Legend: B images, K captions per image, C channels, S view side, L tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from hfssl.augmentations.presets import ViewAugmentation
from hfssl.augmentations.seeding import WorkerSeededGenerator
from hfssl.collators.multi_view import DataCollatorForMultiView


def plain_view(image_size: int) -> ViewAugmentation:
    """The largest centred square of the image resized to `image_size`, without any random augmentation."""
    return ViewAugmentation(size=image_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                            grayscale_p=0.0, blur_p=0.0)  # fmt: skip


@dataclass
class DataCollatorForImageText:
    """Collate `{"image": ..., "caption": str or list[str], ...}` examples for image-text contrastive training.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): tokenizes the captions (padding to the longest, truncation).
        image_size (`int`, defaults to 224): side of the default plain view (ignored with `image_collator`).
        image_collator (`DataCollatorForMultiView`, *optional*): makes the image view, e.g.
            `DataCollatorForMultiView(views=simclr_views(224)[:1])`; must have exactly one view. A copy of it is used,
            drawing from this collator's generator, so one seed drives captions and images. Default: a plain resize
            (`plain_view`) normalised with `mean` and `std`.
        mean, std (`tuple[float, ...]`, *optional*): normalisation of the default image collator (ImageNet's by
            default; pass the image tower's `data_config` values).
        channels (`int`, defaults to 3): image channels of the default image collator.
        image_column (`str`, defaults to `"image"`): the example key holding the image.
        caption_column (`str`, defaults to `"caption"`): the key holding one caption or a list of captions.
        captions_per_image (`int`, defaults to 1): K captions drawn per image, without replacement when the image
            has at least K (with replacement otherwise). CLIP draws one.
        max_length (`int`, defaults to 77): captions are truncated to this many tokens (CLIP's context length).
        seed (`int`, *optional*): seed of the generator.

    Returns (from `__call__`):
        `dict` with `pixel_values` (B, C, S, S), `input_ids` and `attention_mask` (K * B, L) with row i * K + j the
        j-th caption drawn for image i, `captions` (the K * B strings drawn) and the other columns passed through
        (`label` becomes `labels`).
    """

    tokenizer: Any
    image_size: int = 224
    image_collator: DataCollatorForMultiView | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3
    image_column: str = "image"
    caption_column: str = "caption"
    captions_per_image: int = 1
    max_length: int = 77
    seed: int | None = None
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.captions_per_image < 1:
            raise ValueError(f"captions_per_image={self.captions_per_image} must be >= 1 (CLIP draws 1 per image).")
        if not callable(self.tokenizer):
            raise TypeError(f"tokenizer must be a transformers tokenizer; got {type(self.tokenizer).__name__}.")
        if self.image_collator is None:
            self.image_collator = DataCollatorForMultiView(
                views=[plain_view(self.image_size)], mean=self.mean, std=self.std, channels=self.channels,
                image_column=self.image_column,
            )
        elif not isinstance(self.image_collator, DataCollatorForMultiView) or len(self.image_collator.views) != 1:
            received = (f"{len(self.image_collator.views)} views" if isinstance(self.image_collator, DataCollatorForMultiView)
                        else type(self.image_collator).__name__)  # fmt: skip
            raise ValueError(
                f"image_collator must be a DataCollatorForMultiView with exactly one view; got {received}. Keep one "
                "view of a preset, e.g. DataCollatorForMultiView(views=simclr_views(224)[:1])."
            )
        elif self.image_collator.image_column != self.image_column:
            raise ValueError(
                f"image_collator reads column {self.image_collator.image_column!r} but image_column="
                f"{self.image_column!r}; set both to the dataset's image column."
            )
        self._rng = WorkerSeededGenerator(self.seed)
        self.image_collator = replace(self.image_collator)  # a copy: the caller's collator keeps its own
        self.image_collator._rng = self._rng  # one generator for captions and views (checkpointed by SSLTrainer)

    def sample_captions(self, captions: Sequence[str] | str, generator: torch.Generator) -> list[str]:
        """K captions of one image: a random subset of its captions, or draws with replacement if it has fewer."""
        captions = [captions] if isinstance(captions, str) else list(captions)
        if not captions or not all(isinstance(caption, str) for caption in captions):
            raise ValueError(
                f"column {self.caption_column!r} must hold a caption or a non-empty list of captions (str); got "
                f"{captions!r}."
            )
        count = self.captions_per_image
        if len(captions) >= count:
            indices = torch.randperm(len(captions), generator=generator)[:count]
        else:
            indices = torch.randint(len(captions), (count,), generator=generator)
        return [captions[int(index)] for index in indices]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        generator = self._rng.get()
        for index, example in enumerate(examples):
            if self.caption_column not in example:
                raise ValueError(
                    f"example {index} has no {self.caption_column!r} column (got {sorted(example)}); set "
                    "caption_column= to the column holding the captions."
                )
        captions = [caption for example in examples for caption in self.sample_captions(example[self.caption_column], generator)]
        images = [{key: value for key, value in example.items() if key != self.caption_column} for example in examples]
        batch = self.image_collator(images)
        if len(batch["pixel_values"][0]) != len(examples):
            raise ValueError(
                f"{len(examples) - len(batch['pixel_values'][0])} images of the batch could not be read, and their captions "
                "would be misaligned; remove them from the dataset (skip_invalid_images is not supported here)."
            )
        batch["pixel_values"] = batch["pixel_values"][0]
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], captions=captions)
        return batch

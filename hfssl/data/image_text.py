"""Image-caption pairs for dual-encoder (CLIP / SigLIP) training: a Hub dataset, a saved folder, a file of (image path,
caption) rows, or the built-in labelled images captioned from class templates (an offline smoke test)."""

from __future__ import annotations

import os

from datasets import Dataset, Image, load_dataset, load_from_disk

from hfssl.data.images import FASHION_MNIST_CLASSES, load_image_dataset

CLASS_NAMES = {
    "digits": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "fashion_mnist": FASHION_MNIST_CLASSES,
}
CAPTION_TEMPLATES = ["a photo of a {}.", "a handwritten {}.", "a drawing of a {}.", "a blurry photo of the {}.",
                     "a low resolution image of a {}.", "a black and white picture of a {}."]  # fmt: skip


def load_image_text_pairs(
    dataset_name: str | None = None,
    train_file: str | None = None,
    builtin: str = "digits",
    dataset_config_name: str | None = None,
    image_column: str = "image",
    caption_column: str = "caption",
    image_size: int = 32,
    eval_samples: int = 500,
    seed: int = 42,
) -> tuple[Dataset, Dataset]:
    """(train, held-out) datasets with an `Image` column "image", a "caption" column (a string or a list of strings
    per image) and, for the built-in data, "label".

    Args:
        dataset_name (`str`, *optional*): a Hub id or a `save_to_disk` folder of pairs.
        train_file (`str`, *optional*): a json / jsonl / csv / parquet file whose `image_column` holds image paths
            (relative to the file) and `caption_column` the captions.
        builtin (`str`): without either, "digits" or "fashion_mnist", each image captioned by every
            `CAPTION_TEMPLATES` entry filled with its class name; held out: the test split.
        image_size (`int`): side of the upsampled built-in digits.
        eval_samples (`int`): pairs held out from `dataset_name` / `train_file` (at most a fifth of them).
    """
    if dataset_name is None and train_file is None:
        if builtin not in CLASS_NAMES:
            raise ValueError(f"builtin={builtin!r} is not supported; use one of {sorted(CLASS_NAMES)}.")
        names = CLASS_NAMES[builtin]
        splits = [load_image_dataset(builtin=builtin, split=split, image_size=image_size) for split in ("train", "test")]
        train, test = (split.map(lambda example: {"caption": [t.format(names[example["label"]]) for t in CAPTION_TEMPLATES]})
                       for split in splits)  # fmt: skip
        return train, test
    if train_file is not None:
        extension = train_file.rsplit(".", 1)[-1]
        pairs = load_dataset({"jsonl": "json"}.get(extension, extension), data_files=train_file, split="train")
        root = os.path.dirname(os.path.abspath(train_file))
        pairs = pairs.map(lambda example: {image_column: os.path.join(root, example[image_column])})
    elif os.path.isdir(dataset_name):
        pairs = load_from_disk(dataset_name)
        pairs = pairs["train"] if hasattr(pairs, "keys") else pairs
    else:
        pairs = load_dataset(dataset_name, dataset_config_name, split="train")
    missing = [column for column in (image_column, caption_column) if column not in pairs.column_names]
    if missing:
        raise ValueError(
            f"the pairs have no column {missing} (columns: {pairs.column_names}); pass --image_column / --caption_column."
        )
    renames = {key: value for key, value in ((image_column, "image"), (caption_column, "caption")) if key != value}
    pairs = pairs.rename_columns(renames).cast_column("image", Image())
    split = pairs.train_test_split(test_size=min(eval_samples, len(pairs) // 5), seed=seed)
    return split["train"], split["test"]

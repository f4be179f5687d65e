"""Image datasets for the recipes: built-in offline ones (digits, Fashion-MNIST), the Hub, a local path, a folder;
each as a `datasets.Dataset` with an `Image` column "image" and, when labels exist, a `ClassLabel` column "label"."""

from __future__ import annotations

import gzip
import logging
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset, load_from_disk
from PIL import Image as PILImage

from hfssl.augmentations.image_io import to_uint8_chw

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
BUILTIN_DATASETS = ("digits", "fashion_mnist")
IMAGE_COLUMN_CANDIDATES = ("image", "img", "picture", "pixel_values")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label", "coarse_label", "class")


def _to_dataset(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Dataset:
    features = Features({"image": Image(), "label": ClassLabel(names=class_names)})
    return Dataset.from_dict({"image": [PILImage.fromarray(image) for image in images], "label": labels.tolist()}, features=features)


def load_digits_dataset(image_size: int = 32, split: str = "train", test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 0-16), scaled to 0-255 and upsampled.

    Args:
        image_size (`int`): output side in pixels (bicubic upsampling from 8x8).
        split (`str`): "train" (the first 80%), "test" (the rest) or "all".
        test_fraction (`float`): fraction held out for "test".

    Returns:
        `datasets.Dataset` with "image" (grayscale PIL, mode L) and "label" (ClassLabel "0".."9").
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = np.stack([np.asarray(PILImage.fromarray(p).resize((image_size, image_size), PILImage.BICUBIC)) for p in pixels])
    return _to_dataset(*_split(images, digits.target, split, test_fraction), [str(d) for d in range(10)])


def _split(images: np.ndarray, labels: np.ndarray, split: str, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    cut = int(round(len(images) * (1 - test_fraction)))
    splits = {"train": (images[:cut], labels[:cut]), "test": (images[cut:], labels[cut:]), "all": (images, labels)}
    if split not in splits:
        raise ValueError(f"split={split!r} is not available for the built-in datasets; use 'train', 'test' or 'all'.")
    return splits[split]


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    _, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if dtype_code != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (type code {dtype_code:#x}).")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist_dataset(split: str = "train", data_dir: str = FASHION_MNIST_DIR, max_samples: int | None = None) -> Dataset:
    """Fashion-MNIST (Xiao et al., 2017) from its IDX files (28x28 grayscale, 60,000 train / 10,000 test).

    Args:
        split (`str`): "train" or "test".
        data_dir (`str`): folder holding `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`
            (Debian: `apt-get install dataset-fashion-mnist`).
        max_samples (`int`, *optional*): keep only the first examples.

    Returns:
        `datasets.Dataset` with "image" (PIL, mode L) and "label" (ClassLabel with the 10 class names).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not available for Fashion-MNIST; use 'train' or 'test'.")
    prefix = "train" if split == "train" else "t10k"
    paths = []
    for kind in ("images-idx3", "labels-idx1"):
        candidates = [os.path.join(data_dir, f"{prefix}-{kind}-ubyte{ext}") for ext in (".gz", "")]
        found = [path for path in candidates if os.path.exists(path)]
        if not found:
            raise FileNotFoundError(
                f"Fashion-MNIST file {candidates[0]} not found; install it (apt-get install dataset-fashion-mnist) "
                "or pass data_dir= the folder holding the IDX files."
            )
        paths.append(found[0])
    images, labels = _read_idx(paths[0]), _read_idx(paths[1])
    if max_samples is not None:
        images, labels = images[:max_samples], labels[:max_samples]
    return _to_dataset(images, labels, FASHION_MNIST_CLASSES)


def _standardize_columns(dataset: Dataset, image_column: str | None) -> Dataset:
    """Rename the image column to "image" and the label column to "label"; cast the image to `Image`."""
    columns = dataset.column_names
    source = image_column or next((name for name in IMAGE_COLUMN_CANDIDATES if name in columns), None)
    if source is None or source not in columns:
        raise ValueError(f"no image column found among {columns}; pass image_column= the name of the column holding images.")
    if source != "image":
        dataset = dataset.rename_column(source, "image")
    if not isinstance(dataset.features["image"], Image):
        dataset = dataset.cast_column("image", Image())
    label = next((name for name in LABEL_COLUMN_CANDIDATES if name in dataset.column_names), None)
    if label is not None and label != "label":
        dataset = dataset.rename_column(label, "label")
    return dataset


def load_image_dataset(
    dataset_name: str | None = None,
    train_dir: str | None = None,
    builtin: str = "digits",
    split: str = "train",
    image_size: int = 32,
    dataset_config_name: str | None = None,
    image_column: str | None = None,
    max_samples: int | None = None,
    decode: bool = True,
) -> Dataset:
    """Load the images a recipe trains on, from the first source given.

    Args:
        dataset_name (`str`, *optional*): a Hub dataset id or a local path; a folder written by
            `Dataset.save_to_disk` is read with `load_from_disk`, anything else with `load_dataset`.
        train_dir (`str`, *optional*): a folder of images (class sub-folders give labels), read with the
            "imagefolder" builder: one "train" split unless it has split sub-folders (`train/`, `test/`, ...); a
            `split` it does not have raises, so the training images are never returned as the "test" split.
        builtin (`str`): offline default when neither is given: "digits" (scikit-learn, upsampled to
            `image_size`) or "fashion_mnist" (28x28, from /usr/share/datasets/fashion-mnist).
        split (`str`): split to load ("train", "test", or e.g. "train[:10%]" for Hub datasets and image folders).
        image_size (`int`): output side of the upsampled digits (other sources keep their size).
        dataset_config_name (`str`, *optional*): Hub dataset configuration.
        image_column (`str`, *optional*): name of the image column if it is not one of "image", "img", ....
        max_samples (`int`, *optional*): keep only the first examples.
        decode (`bool`, defaults to `True`): `True` gives PIL images; `False` keeps the "image" column undecoded
            (`{"bytes", "path"}` dicts) for the hfssl collators, which name the file of an unreadable image or skip
            it (`skip_invalid_images=True`), where `datasets` would fail in the DataLoader naming no file.

    Returns:
        `datasets.Dataset` with an `Image` column "image" and, if the source has labels, "label".
    """
    if dataset_name is not None and train_dir is not None:
        raise ValueError(f"got both dataset_name={dataset_name!r} and train_dir={train_dir!r}; pass only one.")
    if dataset_name is not None:
        saved = ("dataset_info.json", "dataset_dict.json", "state.json")
        if os.path.isdir(dataset_name) and any(os.path.exists(os.path.join(dataset_name, name)) for name in saved):
            dataset = load_from_disk(dataset_name)
            if isinstance(dataset, DatasetDict):
                if split not in dataset:
                    raise ValueError(f"split={split!r} not in the saved dataset {dataset_name} (has {list(dataset)}).")
                dataset = dataset[split]
        else:
            dataset = load_dataset(dataset_name, dataset_config_name, split=split)
        dataset = _standardize_columns(dataset, image_column)
    elif train_dir is not None:
        if not os.path.isdir(train_dir):
            raise FileNotFoundError(f"train_dir={train_dir!r} is not a folder; pass a folder of images (or class sub-folders).")
        try:
            dataset = load_dataset("imagefolder", data_dir=train_dir, split=split)
        except ValueError as error:  # datasets: 'Unknown split "test". Should be one of ['train']'
            raise ValueError(
                f"split={split!r} is not available in train_dir={train_dir!r} ({error}). A folder of images is one "
                "'train' split unless it has split sub-folders (train/ and test/ or validation/, each holding the class "
                "sub-folders): move the training images into train/ and the held-out ones into test/."
            ) from error
        dataset = _standardize_columns(dataset, image_column)
    elif builtin == "digits":
        dataset = load_digits_dataset(image_size=image_size, split=split)
    elif builtin == "fashion_mnist":
        dataset = load_fashion_mnist_dataset(split=split, max_samples=max_samples)
    else:
        raise ValueError(f"builtin={builtin!r} is unknown; use one of {BUILTIN_DATASETS}, or pass dataset_name / train_dir.")
    if max_samples is not None and len(dataset) > max_samples:
        dataset = dataset.select(range(max_samples))
    if dataset.features["image"].decode != decode:
        dataset = dataset.cast_column("image", Image(decode=decode))
    return dataset


def _readable(image: Any) -> bool:
    try:
        to_uint8_chw(image)
    except (OSError, ValueError, SyntaxError, TypeError):
        return False
    return True


def decoded_images(dataset: Dataset, skip_invalid_images: bool = False) -> Dataset:
    """`dataset` with its "image" column decoded to PIL images (e.g. for `knn_evaluate`).

    Args:
        dataset (`datasets.Dataset`): with an `Image` column "image", decoded or not.
        skip_invalid_images (`bool`): leave out the examples whose image cannot be read (corrupt, truncated or empty;
            their count is logged), as the collators skip them in training; this reads every image once more.

    Returns:
        `datasets.Dataset` with a decoded `Image` column "image".
    """
    if skip_invalid_images:
        readable = dataset.cast_column("image", Image(decode=False)).filter(_readable, input_columns="image")
        if len(readable) < len(dataset):
            logger.warning("left %d unreadable images of %d out", len(dataset) - len(readable), len(dataset))
        dataset = readable
    if not dataset.features["image"].decode:
        dataset = dataset.cast_column("image", Image())
    return dataset


@dataclass
class ImageDataArguments:
    """The data options every image-SSL recipe shares, as an `HfArgumentParser` dataclass (the image counterpart of
    `hfssl.data.text.TextDataArguments`); recipes subclass it to change a default."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or local path (save_to_disk folder)."})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The dataset's configuration name (datasets.load_dataset's second argument)."}
    )
    train_dir: str | None = field(default=None, metadata={"help": "Folder of images (imagefolder)."})
    builtin: str = field(default="digits", metadata={"help": "Offline default: digits or fashion_mnist."})
    image_column: str | None = field(
        default=None, metadata={"help": "The column holding the images (default: the first Image column)."}
    )
    image_size: int = field(default=32, metadata={"help": "Side of the square images the model trains on, in pixels."})
    min_scale: float = field(default=0.2, metadata={"help": "RandomResizedCrop lower scale (papers: 0.08-0.2)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    skip_invalid_images: bool = field(
        default=False,
        metadata={"help": "Skip images that cannot be read (corrupt or truncated files, empty images) instead of "
                  "stopping with an error naming the file; the count skipped is logged."},
    )  # fmt: skip

    def load(self, split: str = "train", max_samples: int | None = None, decode: bool = False) -> Dataset:
        """`load_image_dataset` from these options (`max_samples` defaults to `max_train_samples` for "train").

        `decode=False` (the default, for training) leaves the images undecoded for the collator, which names the
        file of an unreadable image or skips it (`configure_collator`); `decode=True` gives PIL images (e.g. for
        `hfssl.evaluation.features.knn_evaluate`)."""
        if split == "train" and max_samples is None:
            max_samples = self.max_train_samples
        return load_image_dataset(self.dataset_name, self.train_dir, self.builtin, split, self.image_size,
                                  self.dataset_config_name, self.image_column, max_samples, decode)  # fmt: skip

    def configure_collator(self, collator: Any) -> Any:
        """Give an hfssl image collator (`DataCollatorForMultiView`, `DataCollatorForMaskedImageModeling`, a pretext
        collator) these arguments' `skip_invalid_images`, and return it; `TypeError` for a collator without it."""
        if not hasattr(collator, "skip_invalid_images"):
            raise TypeError(
                f"{type(collator).__name__} has no skip_invalid_images option; configure_collator takes an hfssl image "
                "collator (DataCollatorForMultiView, DataCollatorForMaskedImageModeling, the pretext collators)."
            )
        collator.skip_invalid_images = self.skip_invalid_images
        return collator

    def describe(self) -> str:
        """The data source, for model cards."""
        return self.dataset_name or self.train_dir or f"hfssl's built-in {self.builtin} images"

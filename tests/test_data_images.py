"""hfssl.data.images: built-in datasets, local paths (save_to_disk, image folder) and errors."""

import os

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Image as ImageFeature
from PIL import Image

from hfssl.data.images import FASHION_MNIST_DIR, ImageDataArguments, load_digits_dataset, load_image_dataset


def test_digits_are_upsampled_with_image_and_label_columns():
    dataset = load_image_dataset(builtin="digits", image_size=24, max_samples=50)
    assert len(dataset) == 50 and isinstance(dataset.features["image"], ImageFeature)
    assert isinstance(dataset.features["label"], ClassLabel) and dataset.features["label"].names[3] == "3"
    image = dataset[0]["image"]
    assert image.size == (24, 24) and image.mode == "L" and np.asarray(image).max() > 200
    train, test = load_digits_dataset(8, "train"), load_digits_dataset(8, "test")
    assert len(train) + len(test) == 1797


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_idx_files():
    dataset = load_image_dataset(builtin="fashion_mnist", split="test", max_samples=20)
    assert len(dataset) == 20 and dataset[0]["image"].size == (28, 28)
    assert dataset.features["label"].names[9] == "ankle boot" and dataset[0]["label"] == 9  # first test image: a boot


def test_local_saved_dataset_and_image_folder(tmp_path):
    images = [Image.fromarray(np.full((6, 6, 3), i * 40, dtype=np.uint8)) for i in range(4)]
    Dataset.from_dict({"img": images, "fine_label": [0, 1, 0, 1]}).save_to_disk(str(tmp_path / "saved"))
    dataset = load_image_dataset(dataset_name=str(tmp_path / "saved"))
    assert dataset.column_names == ["image", "label"] and isinstance(dataset.features["image"], ImageFeature)
    for name in ("cat", "dog"):
        os.makedirs(tmp_path / "folder" / name)
        for i in range(2):
            images[i].save(tmp_path / "folder" / name / f"{i}.png")
    folder = load_image_dataset(train_dir=str(tmp_path / "folder"))
    assert len(folder) == 4 and folder.features["label"].names == ["cat", "dog"] and folder[0]["image"].size == (6, 6)


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="pass only one"):
        load_image_dataset(dataset_name="x", train_dir="y")
    with pytest.raises(ValueError, match="builtin='cifar' is unknown"):
        load_image_dataset(builtin="cifar")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_image_dataset(train_dir=str(tmp_path / "missing"))
    Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(ValueError, match="no image column found.*image_column="):
        load_image_dataset(dataset_name=str(tmp_path / "text"))


def test_image_folder_never_returns_the_training_images_as_another_split(tmp_path):
    images = [Image.fromarray(np.full((6, 6, 3), i * 40, dtype=np.uint8)) for i in range(4)]
    for name in ("cat", "dog"):
        os.makedirs(tmp_path / "plain" / name)
        for split, size in (("train", 3), ("test", 1)):
            os.makedirs(tmp_path / "split" / split / name)
            for i in range(size):
                images[i].save(tmp_path / "split" / split / name / f"{i}.png")
        for i in range(2):
            images[i].save(tmp_path / "plain" / name / f"{i}.png")
    # A plain folder is one "train" split: asking it for "test" raises (the vision recipes then skip kNN).
    with pytest.raises(ValueError, match=r"split='test' is not available in train_dir=.*move the training images into train/"):
        load_image_dataset(train_dir=str(tmp_path / "plain"), split="test")
    with pytest.raises(ValueError, match="split='test' is not available"):
        ImageDataArguments(train_dir=str(tmp_path / "plain")).load("test")
    # train/ and test/ sub-folders are separate splits, each labelled by its class sub-folders.
    train = load_image_dataset(train_dir=str(tmp_path / "split"), split="train")
    test = load_image_dataset(train_dir=str(tmp_path / "split"), split="test")
    assert (len(train), len(test)) == (6, 2) and test.features["label"].names == ["cat", "dog"]
    assert sorted(test["label"]) == [0, 1]

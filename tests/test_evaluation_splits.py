"""load_evaluation_splits scores on the data's own held-out split (test, else validation) and holds out a stratified
fraction of train only for data with neither, saying which."""

import logging

import numpy as np
import pytest
from PIL import Image

from hfssl.data.images import load_image_dataset
from hfssl.evaluation.splits import load_evaluation_splits


def image_folder(root, splits: dict[str, int]):
    """Class sub-folders `a/` and `b/` of 8x8 PNGs under each split folder (`""` for a flat folder)."""
    for split, per_class in splits.items():
        for label, value in (("a", 40), ("b", 200)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                Image.fromarray(np.full((8, 8), value + index, dtype=np.uint8)).save(folder / f"{index}.png")
    return str(root)


def loader(folder):
    return lambda split: load_image_dataset(train_dir=folder, split=split)


def test_the_test_folder_is_scored_not_a_part_of_train(tmp_path):
    folder = image_folder(tmp_path, {"train": 10, "test": 3, "validation": 2})
    train, test, description = load_evaluation_splits(loader(folder))
    assert (len(train), len(test), description) == (20, 6, "test")


def test_validation_when_there_is_no_test_split(tmp_path):
    folder = image_folder(tmp_path, {"train": 10, "validation": 2})
    train, test, description = load_evaluation_splits(loader(folder))
    assert (len(train), len(test), description) == (20, 4, "validation")


def test_a_flat_folder_holds_out_a_stratified_fifth_and_says_so(tmp_path, caplog):
    folder = image_folder(tmp_path, {"": 10})
    with caplog.at_level(logging.WARNING, logger="hfssl.evaluation.splits"):
        train, test, description = load_evaluation_splits(loader(folder), seed=1)
    assert (len(train), len(test)) == (16, 4) and sorted(test["label"]) == [0, 0, 1, 1]
    assert description == "20% of 'train' held out (seed 1): the data has no test or validation split"
    assert "give the data a test/ folder" in caplog.text


def test_an_explicit_eval_split_is_used_or_its_absence_reported(tmp_path):
    folder = image_folder(tmp_path, {"train": 10, "test": 3, "validation": 2})
    assert load_evaluation_splits(loader(folder), eval_split="validation")[2] == "validation"
    with pytest.raises(ValueError, match="split='valid' is not available"):
        load_evaluation_splits(loader(folder), eval_split="valid")

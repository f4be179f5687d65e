"""Which labelled images an evaluation fits on (kNN memory, probe train set) and which it scores.

The data's own held-out split is used when it has one, `test` first, then `validation`; only data with neither (a
flat image folder, a Hub dataset with a train split only) is split, a stratified seeded fraction of `train` held out.
The returned description says which happened, for logs and result files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from datasets import ClassLabel, Dataset

logger = logging.getLogger(__name__)

HELD_OUT_SPLITS = ("test", "validation")


def load_evaluation_splits(
    load: Callable[[str], Dataset], train_split: str = "train", eval_split: str | None = None,
    held_out_fraction: float = 0.2, seed: int = 0,
) -> tuple[Dataset, Dataset, str]:
    """The (train, eval) datasets of an evaluation and a description of the eval split.

    Args:
        load (`Callable[[str], datasets.Dataset]`): loads a split by name and raises `ValueError` naming the split
            when the data has no such split (as `hfssl.data.images.load_image_dataset` and
            `ImageDataArguments.load` do).
        train_split (`str`, defaults to `"train"`): the images the classifier is fitted on (kNN memory).
        eval_split (`str`, *optional*): the split to score; `None` takes `"test"`, else `"validation"`, else holds
            out `held_out_fraction` of `train_split`.
        held_out_fraction (`float`, defaults to 0.2): the share of `train_split` held out when the data has no
            held-out split (stratified by "label" when it is a `ClassLabel`).
        seed (`int`, defaults to 0): the held-out split's seed.

    Returns:
        `(train, eval, description)`, the description e.g. `"test"` or
        `"20% of 'train' held out (seed 0): the data has no test or validation split"`.

    Raises:
        ValueError: when `eval_split` is given and missing (the loader's error), or `held_out_fraction` is not in
            (0, 1).
    """
    train = load(train_split)
    if eval_split is not None:
        return train, load(eval_split), eval_split
    for name in HELD_OUT_SPLITS:
        try:
            return train, load(name), name
        except ValueError as error:
            if "split" not in str(error).lower():  # not a missing split (hfssl's loaders and `datasets` name it)
                raise
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction={held_out_fraction} must lie in (0, 1), e.g. 0.2.")
    stratify = "label" if isinstance(train.features.get("label"), ClassLabel) else None
    parts = train.train_test_split(test_size=held_out_fraction, seed=seed, stratify_by_column=stratify)
    description = (
        f"{held_out_fraction:.0%} of {train_split!r} held out (seed {seed}): the data has no test or validation split"
    )
    logger.warning("Evaluating on %s; give the data a test/ folder (or split) to evaluate on it instead.", description)
    return parts["train"], parts["test"], description

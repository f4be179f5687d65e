"""The side a trainer's default views take: read from the first training image in any accepted form, or a reason."""

import io

import numpy as np
import torch
from datasets import Dataset, Image
from PIL import Image as PILImage

from hfssl.trainers.image_size import batch_image_size, first_image_side, image_side


def test_the_shorter_side_of_every_image_form():
    picture = PILImage.new("RGB", (40, 24))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    assert image_side(picture) == 24
    assert image_side({"bytes": buffer.getvalue(), "path": None}) == 24
    assert image_side(np.zeros((24, 40, 3), dtype=np.uint8)) == image_side(torch.zeros(3, 24, 40)) == 24
    assert image_side("not an image") is None


def test_first_image_side_reads_undecoded_datasets_and_explains_what_it_cannot_read():
    pictures = [PILImage.new("L", (32, 32)) for _ in range(2)]
    dataset = Dataset.from_dict({"image": pictures}).cast_column("image", Image(decode=False))
    assert first_image_side(dataset) == (32, "")
    assert first_image_side(None) == (None, "no train_dataset was given")
    assert "cannot be indexed" in first_image_side(dataset.to_iterable_dataset())[1]
    assert "'image' could not be read" in first_image_side(Dataset.from_dict({"img": [1]}))[1]


def test_batch_image_size_is_the_largest_view():
    views = [torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 16, 16)]
    assert batch_image_size(views) == 32 and batch_image_size(torch.zeros(2, 3, 8, 8)) == 8
    assert batch_image_size(None) is None

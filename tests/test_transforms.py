"""Per-image multi-view transforms: the collator's views on a batch of one, the papers' presets, Dataset pipelines."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from torch.utils.data import DataLoader

from hfssl import (
    BYOLTransform,
    DataCollatorForMultiView,
    DINOTransform,
    MoCoV2Transform,
    MultiViewTransform,
    SimCLRTransform,
    SwAVTransform,
    ViewAugmentation,
)


def random_image(seed: int, height: int = 40, width: int = 52, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


# each transform preset and the collator preset it must match, with the same (small) arguments
PRESETS = [
    (SimCLRTransform, DataCollatorForMultiView.simclr, {"image_size": 24}),
    (MoCoV2Transform, DataCollatorForMultiView.moco_v2, {"image_size": 24}),
    (BYOLTransform, DataCollatorForMultiView.byol, {"image_size": 24}),
    (DINOTransform, DataCollatorForMultiView.dino, {"global_size": 32, "num_local_crops": 3}),
    (SwAVTransform, DataCollatorForMultiView.swav, {"global_size": 32, "num_local_crops": 2}),
]


@pytest.mark.parametrize("transform_class, collator_preset, arguments", PRESETS, ids=[p[0].__name__ for p in PRESETS])
def test_transform_gives_the_collators_views_of_a_batch_of_one(transform_class, collator_preset, arguments):
    # same ops, same draws: equal bit for bit, call after call (the generator streams stay aligned)
    transform = transform_class(**arguments, seed=7)
    collator = collator_preset(**arguments, seed=7)
    assert transform.views == collator.views
    for index, image in enumerate([random_image(0), random_image(1, 30, 36, "L"), random_image(2, 64, 48)]):
        views = transform(image)
        expected = collator([{"image": image}])["pixel_values"]
        assert len(views) == len(expected) == len(collator.views)
        for view, batch_view, augmentation in zip(views, expected, collator.views):
            assert view.shape == (3, augmentation.size, augmentation.size) and view.dtype == torch.float32
            torch.testing.assert_close(view, batch_view[0], rtol=0, atol=0, msg=f"image {index}")


def test_uint8_output_single_channel_and_numpy_input_match_the_collator():
    views = [ViewAugmentation(size=16, scale=(0.3, 1.0), solarize_p=0.5)] * 2 + [ViewAugmentation(size=8)]
    pixels = np.asarray(random_image(3, mode="L"))
    for options in ({"output_dtype": "uint8"}, {"channels": 1, "mean": (0.5,), "std": (0.25,)}):
        transform = MultiViewTransform(views, seed=1, **options)
        collator = DataCollatorForMultiView(views=views, seed=1, **options)
        for view, batch_view in zip(transform(pixels), collator([{"image": pixels}])["pixel_values"]):
            assert torch.equal(view, batch_view[0])


def test_seeding_repeats_and_differs_by_seed():
    image = random_image(4)
    first, again = SimCLRTransform(image_size=24, seed=3), SimCLRTransform(image_size=24, seed=3)
    for _ in range(2):
        assert all(torch.equal(a, b) for a, b in zip(first(image), again(image)))
    other = SimCLRTransform(image_size=24, seed=4)(image)
    assert not torch.equal(SimCLRTransform(image_size=24, seed=3)(image)[0], other[0])
    # the two views of one call are drawn independently
    one, two = SimCLRTransform(image_size=24, seed=3)(image)
    assert not torch.equal(one, two)


def test_presets_follow_their_papers():
    simclr = SimCLRTransform().views
    assert len(simclr) == 2 and simclr[0] == simclr[1]
    assert (simclr[0].size, simclr[0].scale, simclr[0].jitter_p, simclr[0].grayscale_p, simclr[0].blur_p) == (
        224, (0.08, 1.0), 0.8, 0.2, 0.5
    )
    assert (simclr[0].brightness, simclr[0].contrast, simclr[0].saturation, simclr[0].hue) == pytest.approx(
        (0.8, 0.8, 0.8, 0.2)
    )
    assert SimCLRTransform(strength=0.5, blur_p=0.0).views[0].brightness == pytest.approx(0.4)
    moco = MoCoV2Transform().views
    assert moco[0].scale == (0.2, 1.0) and (moco[0].brightness, moco[0].hue, moco[0].blur_p) == (0.4, 0.1, 0.5)
    byol = BYOLTransform().views
    assert [(view.blur_p, view.solarize_p) for view in byol] == [(1.0, 0.0), (0.1, 0.2)]
    assert all(view.saturation == 0.2 and view.scale == (0.08, 1.0) for view in byol)
    dino = DINOTransform().views
    assert [view.size for view in dino] == [224] * 2 + [96] * 8
    assert [view.scale for view in dino] == [(0.4, 1.0)] * 2 + [(0.05, 0.4)] * 8
    assert [(view.blur_p, view.solarize_p) for view in dino[:3]] == [(1.0, 0.0), (0.1, 0.2), (0.5, 0.0)]
    swav = SwAVTransform().views
    assert [view.size for view in swav] == [224] * 2 + [96] * 6
    assert [view.scale for view in swav] == [(0.14, 1.0)] * 2 + [(0.05, 0.14)] * 6
    # each preset is the collator's preset with the same arguments, defaults included
    for transform_class, collator_preset, _ in PRESETS:
        assert transform_class().views == collator_preset().views
        assert (transform_class().mean, transform_class().std) == (collator_preset().mean, collator_preset().std)


def test_with_transform_and_a_dataloader_with_two_workers():
    image = random_image(5)
    dataset = Dataset.from_dict({"image": [image] * 8, "label": list(range(8))})
    transform = SimCLRTransform(image_size=16, seed=0)
    ready = dataset.with_transform(transform.transform_batch)
    example = ready[0]
    assert set(example) == {"pixel_values", "labels"}
    assert [view.shape for view in example["pixel_values"]] == [(3, 16, 16)] * 2

    def batches():
        torch.manual_seed(0)  # the DataLoader's base seed, which the workers' generators mix in
        return list(DataLoader(ready, batch_size=4, num_workers=2))

    first, again = batches(), batches()
    assert len(first) == 2
    for batch in first:
        assert [tuple(view.shape) for view in batch["pixel_values"]] == [(4, 3, 16, 16)] * 2
    assert sorted(torch.cat([batch["labels"] for batch in first]).tolist()) == list(range(8))
    # reproducible with the same base seed; the two workers (one batch each, same image) draw different views
    for batch, repeated in zip(first, again):
        assert all(torch.equal(a, b) for a, b in zip(batch["pixel_values"], repeated["pixel_values"]))
    assert not torch.equal(first[0]["pixel_values"][0], first[1]["pixel_values"][0])
    flat = torch.cat([batch["pixel_values"][0] for batch in first]).flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == 8  # no two images of the epoch got the same view


def test_a_torchvision_dataset_takes_the_transform():
    torchvision = pytest.importorskip("torchvision")
    transform = DINOTransform(global_size=16, local_size=8, num_local_crops=2)
    dataset = torchvision.datasets.FakeData(size=6, image_size=(3, 20, 24), num_classes=3, transform=transform)
    views, labels = next(iter(DataLoader(dataset, batch_size=3, num_workers=2)))
    assert [tuple(view.shape) for view in views] == [(3, 3, 16, 16)] * 2 + [(3, 3, 8, 8)] * 2
    assert labels.shape == (3,)


def test_errors_name_the_problem_and_the_fix():
    with pytest.raises(TypeError, match="non-empty list of ViewAugmentation"):
        MultiViewTransform([])
    with pytest.raises(ValueError, match="output_dtype='float16' is not supported; use 'float32' or 'uint8'"):
        SimCLRTransform(output_dtype="float16")
    with pytest.raises(ValueError, match="channels=2 is not supported"):
        SimCLRTransform(channels=2)
    with pytest.raises(KeyError, match="no column 'image'.*pass image_column="):
        SimCLRTransform(image_size=16).transform_batch({"img": [random_image(0)]})

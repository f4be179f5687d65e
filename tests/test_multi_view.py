"""DataCollatorForMultiView: input kinds, presets, shapes, determinism, op probabilities, errors, Trainer."""

import io
import logging
import math
import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from datasets import Dataset, Features, Image as ImageFeature, Value
from PIL import Image
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

from hfssl.augmentations import photometric as P
from hfssl.augmentations.geometric import resize_boxes_uint8, sample_resized_crop_boxes
from hfssl.augmentations.normalization import normalization_from
from hfssl.augmentations.presets import ViewAugmentation
from hfssl.collators.multi_view import DataCollatorForMultiView


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine they oversubscribe it
    (a resnet18 step went from 0.1 s to 4 s): use one thread in this module, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


INPUTS = {
    "pil_L": Image.fromarray(RGB[..., 0]),
    "pil_RGB": Image.fromarray(RGB),
    "pil_RGBA": Image.fromarray(RGB).convert("RGBA"),
    "pil_P": Image.fromarray(RGB).convert("P"),
    "pil_CMYK": Image.fromarray(RGB).convert("CMYK"),
    "pil_I16": Image.fromarray(RGB[..., 0].astype(np.uint16) * 257),
    "numpy_HW": RGB[..., 0],
    "numpy_HWC": RGB,
    "torch_CHW_uint8": torch.from_numpy(RGB).permute(2, 0, 1).contiguous(),
    "torch_CHW_float": torch.from_numpy(RGB).permute(2, 0, 1).float() / 255,
    "datasets_dict": {"bytes": png_bytes(Image.fromarray(RGB)), "path": None},
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("channels", [3, 1])
def test_every_input_kind_gives_documented_shapes(kind, channels):
    collator = DataCollatorForMultiView.simclr(image_size=16, seed=0, channels=channels)
    batch = collator([{"image": INPUTS[kind], "label": 3}, {"image": INPUTS[kind], "label": 5}])
    assert len(batch["pixel_values"]) == 2
    for view in batch["pixel_values"]:
        assert view.shape == (2, channels, 16, 16) and view.dtype == torch.float32
    assert batch["labels"].tolist() == [3, 5]


def test_uint8_output_and_high_bit_depth_scaling():
    collator = DataCollatorForMultiView.moco_v2(image_size=8, seed=0, output_dtype="uint8")
    views = collator([{"image": INPUTS["pil_I16"]}])["pixel_values"]
    assert all(view.dtype == torch.uint8 and view.shape == (1, 3, 8, 8) for view in views)
    plain = DataCollatorForMultiView(views=[ViewAugmentation(size=20, scale=(1, 1), ratio=(1.2, 1.2), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)], output_dtype="uint8")
    # an I;16 image of value v * 257 decodes to v exactly
    out = plain([{"image": INPUTS["pil_I16"]}])["pixel_values"][0]
    assert out.shape == (1, 3, 20, 20) and out.max() <= 255


def test_dino_multi_crop_grouping_and_other_presets():
    collator = DataCollatorForMultiView.dino(global_size=24, local_size=8, num_local_crops=3, seed=1)
    views = collator([{"image": INPUTS["pil_RGB"]}] * 4)["pixel_values"]
    assert [tuple(v.shape) for v in views] == [(4, 3, 24, 24)] * 2 + [(4, 3, 8, 8)] * 3
    byol = DataCollatorForMultiView.byol(image_size=16)
    assert (byol.views[0].blur_p, byol.views[1].blur_p, byol.views[0].solarize_p, byol.views[1].solarize_p) == (1.0, 0.1, 0.0, 0.2)
    simclr = DataCollatorForMultiView.simclr(image_size=32, strength=0.5)
    assert simclr.views[0].brightness == pytest.approx(0.4) and simclr.views[0].hue == pytest.approx(0.1)


def test_mixed_sizes_and_images_smaller_than_the_crop():
    collator = DataCollatorForMultiView.simclr(image_size=32, seed=0)
    examples = [{"image": Image.fromarray(RGB[:3, :5])}, {"image": Image.fromarray(RNG.integers(0, 256, (60, 41, 3), dtype=np.uint8))}]
    views = collator(examples)["pixel_values"]
    assert all(v.shape == (2, 3, 32, 32) and torch.isfinite(v).all() for v in views)


def test_pass_through_columns_and_no_mutation():
    tensor = INPUTS["torch_CHW_uint8"].clone()
    examples = [{"image": tensor, "label": 1, "name": "a", "score": 0.5}]
    batch = DataCollatorForMultiView.simclr(image_size=8, seed=0)(examples)
    assert batch["labels"].tolist() == [1] and batch["name"] == ["a"] and batch["score"].tolist() == [0.5]
    assert torch.equal(tensor, INPUTS["torch_CHW_uint8"]) and set(examples[0]) == {"image", "label", "name", "score"}


def test_seed_reproducible_and_distinct():
    examples = [{"image": INPUTS["pil_RGB"]}] * 3
    first = DataCollatorForMultiView.simclr(image_size=16, seed=7)(examples)["pixel_values"]
    second = DataCollatorForMultiView.simclr(image_size=16, seed=7)(examples)["pixel_values"]
    other = DataCollatorForMultiView.simclr(image_size=16, seed=8)(examples)["pixel_values"]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0], first[1])  # the two views differ


def test_picklable_and_distinct_per_dataloader_worker():
    collator = DataCollatorForMultiView.simclr(image_size=8, seed=0)
    collator([{"image": INPUTS["pil_RGB"]}])  # creates the generator; pickling must still work
    clone = pickle.loads(pickle.dumps(collator))
    fresh = DataCollatorForMultiView.simclr(image_size=8, seed=0)
    assert torch.equal(clone([{"image": INPUTS["pil_RGB"]}])["pixel_values"][0], fresh([{"image": INPUTS["pil_RGB"]}])["pixel_values"][0])
    data = [{"image": INPUTS["torch_CHW_uint8"]}] * 4

    def run():
        torch.manual_seed(0)
        return [b["pixel_values"][0] for b in DataLoader(data, batch_size=2, num_workers=2, collate_fn=collator)]

    first, second = run(), run()
    assert not torch.equal(first[0], first[1])  # worker 0 and worker 1 draw different views of the same images
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # and the run repeats


@pytest.mark.parametrize("preset", ["byol", "simclr"])
@pytest.mark.parametrize("output_dtype", ["float32", "uint8"])
def test_photometric_on_device_matches_eager_path(preset, output_dtype):
    images = [Image.fromarray(RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in range(40)]
    examples = [{"image": image, "label": index} for index, image in enumerate(images)]
    eager = getattr(DataCollatorForMultiView, preset)(image_size=16, seed=3, output_dtype=output_dtype)(examples)
    deferred_collator = getattr(DataCollatorForMultiView, preset)(image_size=16, seed=3, output_dtype=output_dtype, photometric_on_device=True)
    deferred = deferred_collator(examples)
    assert all(v.dtype == torch.uint8 for v in deferred["pixel_values"]) and "photometric_params" not in eager
    finished = deferred_collator.apply_photometric(deferred)
    assert "photometric_params" not in finished and torch.equal(finished["labels"], eager["labels"])
    for a, b in zip(eager["pixel_values"], finished["pixel_values"]):
        assert a.is_contiguous() and a.dtype == b.dtype and torch.equal(a, b)
    with pytest.raises(ValueError, match="photometric_on_device=True"):
        deferred_collator.apply_photometric(eager)


class ReportsSharedViews:
    """Collate with `collator` and record whether the views were made in shared memory (inside the worker)."""

    def __init__(self, collator) -> None:
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator(examples)
        batch["made_shared"] = torch.tensor([view.is_shared() for view in batch["pixel_values"]])
        return batch


def test_workers_hand_over_views_in_shared_memory_or_uint8_crops_finished_alike():
    data = [{"image": Image.fromarray(RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)), "label": i} for i in range(12)]

    def run(collator, finish) -> tuple[list[torch.Tensor], list[dict]]:
        torch.manual_seed(0)  # the same worker seeds in both runs
        batches = list(DataLoader(data, batch_size=2, num_workers=2, collate_fn=ReportsSharedViews(collator)))
        return [torch.cat(finish(batch)["pixel_values"]) for batch in batches], batches

    eager, made_in_workers = run(DataCollatorForMultiView.simclr(image_size=16, seed=0), lambda batch: batch)
    assert all(batch["made_shared"].all() for batch in made_in_workers)  # float views written into shared memory
    collator = DataCollatorForMultiView.simclr(image_size=16, seed=0, photometric_on_device=True)
    deferred, handed_over = run(collator, collator.apply_photometric)
    assert all(view.dtype == torch.uint8 for batch in handed_over for view in batch["pixel_values"])
    assert len(eager) == 6 and all(torch.equal(a, b) for a, b in zip(eager, deferred))


def test_photometric_ops_match_torchvision():
    images = torch.rand(3, 3, 9, 11)
    factors = torch.tensor([0.6, 1.3, 0.9])
    for ours, theirs in [(P.adjust_brightness, TF.adjust_brightness), (P.adjust_contrast, TF.adjust_contrast), (P.adjust_saturation, TF.adjust_saturation)]:
        expected = torch.stack([theirs(images[i], float(factors[i])) for i in range(3)])
        torch.testing.assert_close(ours(images, factors), expected, atol=1e-4, rtol=0)
    shifts = torch.tensor([-0.4, 0.1, 0.3])
    expected = torch.stack([TF.adjust_hue(images[i], float(shifts[i])) for i in range(3)])
    torch.testing.assert_close(P.adjust_hue(images, shifts), expected, atol=1e-5, rtol=0)
    expected = torch.stack([TF.gaussian_blur(images[i], [5, 5], [s, s]) for i, s in enumerate([0.5, 1.0, 2.0])])
    torch.testing.assert_close(P.gaussian_blur(images, torch.tensor([0.5, 1.0, 2.0]), 5), expected, atol=1e-5, rtol=0)
    wide = torch.rand(2, 3, 50, 70)  # K = 9 (SimCLR's 10% of 96 px)
    expected = torch.stack([TF.gaussian_blur(wide[i], [9, 9], [s, s]) for i, s in enumerate([0.3, 1.9])])
    torch.testing.assert_close(P.gaussian_blur(wide, torch.tensor([0.3, 1.9]), 9), expected, atol=1e-5, rtol=0)
    wider = torch.rand(2, 3, 90, 100)  # K = 19
    expected = torch.stack([TF.gaussian_blur(wider[i], [19, 19], [s, s]) for i, s in enumerate([0.8, 2.0])])
    torch.testing.assert_close(P.gaussian_blur(wider, torch.tensor([0.8, 2.0]), 19), expected, atol=1e-5, rtol=0)
    small = torch.rand(2, 3, 4, 9)  # pad 4 >= 4 rows: the replicate fallback, as the blur's own edge rule
    assert P.gaussian_blur(small, torch.tensor([1.0, 1.5]), 9).shape == small.shape
    tall = torch.rand(2, 3, 60, 7)  # K = 3, a narrow image
    expected = torch.stack([TF.gaussian_blur(tall[i], [3, 3], [s, s]) for i, s in enumerate([0.7, 1.5])])
    torch.testing.assert_close(P.gaussian_blur(tall, torch.tensor([0.7, 1.5]), 3), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(P.solarize(images, 0.5), TF.solarize(images, 0.5))
    copy = images.clone()
    for op in (P.adjust_brightness, P.adjust_contrast, P.adjust_saturation, P.adjust_hue, P.grayscale):
        op(images, factors) if op is not P.grayscale else op(images)
    assert torch.equal(images, copy)  # the public ops never write into their input


def test_hue_matches_torchvision_on_gray_pixels_ties_and_extreme_shifts():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(40, 3, 7, 9, generator=generator)
    images[:8] = images[:8, :1]  # gray: any hue gives the value back
    images[8:16, 1] = images[8:16, 0]  # red and green tie for the max or the middle
    images[16:32] = (images[16:32] * 4).round() / 4  # many exact ties, 0 and 1
    shifts = torch.rand(40, generator=generator) - 0.5
    shifts[:6] = torch.tensor([-0.5, 0.5, 0.0, 0.25, -0.25, 1 / 6])
    expected = torch.stack([TF.adjust_hue(images[i], float(shifts[i])) for i in range(40)])
    torch.testing.assert_close(P.adjust_hue(images, shifts), expected, atol=1e-5, rtol=0)


def test_color_jitter_matches_torchvision_per_sample_in_each_sample_order():
    view = ViewAugmentation(size=8, jitter_p=0.7, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.3)
    params = view.draw_photometric(64, torch.Generator().manual_seed(0))
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = P.color_jitter(images, params["factors"], params["order"], params["jitter"])
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for image, out, factors, order, apply in zip(images, ours, params["factors"], params["order"], params["jitter"]):
        expected = image
        for op in order.tolist() if apply else []:
            expected = ops[op](expected, float(factors[op]))
        # torchvision weighs red 0.2989 in its luma, PIL and hfssl 0.299: up to 1e-4 an op, four ops chained
        torch.testing.assert_close(out, expected, atol=4e-4, rtol=0)
    assert not torch.equal(ours, images) and torch.equal(ours[~params["jitter"]], images[~params["jitter"]])


def test_crops_are_torchvision_resized_crops():
    images = torch.from_numpy(RNG.integers(0, 256, (2, 3, 30, 41), dtype=np.uint8))
    boxes = torch.tensor([[3.0, 2.0, 40.0, 29.0], [10.0, 5.0, 17.0, 11.0], [0.0, 0.0, 41.0, 30.0]])  # shrink, enlarge, whole
    crops = resize_boxes_uint8(images, boxes, 16, torch.tensor([0, 1, 1]))
    for crop, (x0, y0, x1, y1), index in zip(crops, boxes.long().tolist(), [0, 1, 1]):
        expected = TF.resized_crop(images[index], y0, x0, y1 - y0, x1 - x0, [16, 16], antialias=True)
        assert crop.dtype == torch.uint8 and torch.equal(crop, expected)
    # flipped crops mirror the box before resizing; torchvision flips after: the same pixels (mirror-symmetric kernel)
    many = torch.from_numpy(RNG.integers(0, 256, (40, 3, 64, 64), dtype=np.uint8))
    boxes = sample_resized_crop_boxes(torch.tensor([[64.0, 64.0]] * 40), (0.08, 1.0), (0.75, 4 / 3), torch.Generator().manual_seed(0))
    for size in (24, 64, 80):  # shrink and enlarge
        flipped = resize_boxes_uint8(many, boxes, size, torch.arange(40), torch.ones(40, dtype=torch.bool))
        expected = torch.stack([TF.resized_crop(many[i], y0, x0, y1 - y0, x1 - x0, [size, size], antialias=True).flip(-1)
                                for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist())])  # fmt: skip
        difference = (flipped.int() - expected.int()).abs()
        assert difference.max() <= 1 and (difference > 0).float().mean() < 1e-3


def fraction_changed(view: ViewAugmentation, image: torch.Tensor, n: int, changed) -> float:
    collator = DataCollatorForMultiView(views=[view], output_dtype="uint8", seed=0)
    out = collator([{"image": image}] * n)["pixel_values"][0]
    return changed(out).float().mean().item()


OFF = dict(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
BASE = torch.from_numpy(RNG.integers(0, 256, (3, 8, 8), dtype=np.uint8))
STATISTICAL_CASES = {
    "flip": (dict(flip_p=0.3), lambda out: (out != BASE).flatten(1).any(1) & (out == BASE.flip(-1)).flatten(1).all(1)),
    "jitter": (dict(jitter_p=0.8, brightness=0.5, hue=0.2), lambda out: (out != BASE).flatten(1).any(1)),
    "grayscale": (dict(grayscale_p=0.2), lambda out: (out[:, 0] == out[:, 1]).flatten(1).all(1)),
    "blur": (dict(blur_p=0.5, blur_sigma=(1.0, 2.0), blur_kernel_size=3), lambda out: (out != BASE).flatten(1).any(1)),
    "solarize": (dict(solarize_p=0.2), lambda out: (out != BASE).flatten(1).any(1)),
}


@pytest.mark.parametrize("name", sorted(STATISTICAL_CASES))
def test_each_random_op_fires_at_its_probability(name):
    overrides, changed = STATISTICAL_CASES[name]
    probability = next(value for key, value in overrides.items() if key.endswith("_p"))
    n = 4000
    observed = fraction_changed(ViewAugmentation(**{**OFF, **overrides}), BASE, n, changed)
    five_sigma = 5 * math.sqrt(n * probability * (1 - probability)) / n  # binomial bound on the fraction
    assert abs(observed - probability) <= five_sigma, (name, observed, probability)


def test_crop_boxes_respect_scale_and_ratio():
    # on a square 300 px image every candidate fits (sides <= sqrt(0.6 * 1.25) * 300 < 300): no rejection bias
    n, scale, ratio = 5000, (0.2, 0.6), (0.8, 1.25)
    boxes = sample_resized_crop_boxes(torch.tensor([[300.0, 300.0]]).repeat(n, 1), scale, ratio, torch.Generator().manual_seed(0))
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = width * height / (300 * 300)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 300).all()
    assert area.min() >= scale[0] - 0.01 and area.max() <= scale[1] + 0.01
    aspect = width / height
    assert aspect.min() >= ratio[0] - 0.02 and aspect.max() <= ratio[1] + 0.02
    # area fraction ~ U(0.2, 0.6): mean 0.4, std 0.4/sqrt(12); 5 sigma of the mean of n draws
    assert abs(area.mean().item() - 0.4) <= 5 * (0.4 / math.sqrt(12)) / math.sqrt(n)


def test_unreadable_image_names_the_example_or_is_skipped(caplog):
    truncated = {"bytes": png_bytes(Image.fromarray(RGB))[:60], "path": None}
    examples = [{"image": INPUTS["pil_RGB"], "label": 0}, {"image": truncated, "label": 1}, {"image": INPUTS["pil_RGB"], "label": 2}]
    with pytest.raises(ValueError, match=r"example 1 .*skip_invalid_images=True"):
        DataCollatorForMultiView.simclr(image_size=8)(examples)
    collator = DataCollatorForMultiView.simclr(image_size=8, skip_invalid_images=True)
    with caplog.at_level(logging.WARNING):
        batch = collator(examples)
    assert batch["labels"].tolist() == [0, 2] and batch["pixel_values"][0].shape[0] == 2
    assert "skipped 1 unreadable images" in caplog.text and collator.num_skipped == 1


def test_decode_batch_fast_path_equals_decoding_one_by_one():
    from hfssl.augmentations.image_io import decode_batch, decode_examples, stack_padded

    rgb = [Image.fromarray(RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)) for _ in range(4)]
    gray = [Image.fromarray(RNG.integers(0, 256, (9, 7), dtype=np.uint8)) for _ in range(4)]
    for images, channels in ((rgb, 3), (gray, 3), (gray, 1), (rgb + gray, 3), (rgb, 1)):  # the last two: the general path
        examples = [{"image": image} for image in images]
        batch, sizes, kept = decode_batch(examples, "image", channels)
        decoded, expected_kept = decode_examples(examples, "image", channels)
        expected, expected_sizes = stack_padded(decoded)
        assert torch.equal(batch, expected) and torch.equal(sizes, expected_sizes) and kept == expected_kept
        assert batch.shape == (len(images), channels, 9, 7) and batch.is_contiguous(memory_format=torch.channels_last)
    # a PIL image that fails to decode (a truncated file, opened lazily) still names its example
    truncated = Image.open(io.BytesIO(png_bytes(Image.fromarray(RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)))[:60]))
    with pytest.raises(ValueError, match=r"example 2 "):
        decode_batch([{"image": image} for image in rgb[:2] + [truncated]], "image", 3)
    batch, _, kept = decode_batch([{"image": image} for image in rgb[:2] + [truncated]], "image", 3, skip_invalid=True)
    assert kept == [0, 1] and batch.shape[0] == 2


def test_float_images_are_read_by_their_value_range():
    from hfssl.augmentations.image_io import to_uint8_chw

    # A float tensor must be in [0, 1]: a 0-255 one raises instead of being clamped to a near-white image.
    float_255 = torch.from_numpy(RGB).permute(2, 0, 1).float()
    with pytest.raises(ValueError, match=r"values must be in \[0, 1\]: divide a 0-255 image by 255"):
        to_uint8_chw(float_255)
    with pytest.raises(ValueError, match=r"example 0 .*values must be in \[0, 1\]"):
        DataCollatorForMultiView.simclr(image_size=8)([{"image": float_255}])
    assert torch.equal(to_uint8_chw(torch.full((3, 2, 2), 1.0 + 1e-6)), torch.full((3, 2, 2), 255, dtype=torch.uint8))
    # A PIL "F" image within [0, 1] is scaled by 255; one within [0, 255] keeps its values.
    gray = RGB[..., 0].astype(np.float32)
    unit, byte_range = Image.fromarray(gray / 255), Image.fromarray(gray)
    assert unit.mode == byte_range.mode == "F"
    for image in (unit, byte_range):
        assert torch.equal(to_uint8_chw(image, channels=1)[0], torch.from_numpy(RGB[..., 0]))


def test_unsupported_image_names_the_example_or_is_skipped():
    examples = [{"image": INPUTS["pil_RGB"], "label": 0}, {"image": np.zeros((4, 4), dtype=np.float32), "label": 1}]
    with pytest.raises(TypeError, match=r"example 1 .*dtype float32 is not supported.*skip_invalid_images=True"):
        DataCollatorForMultiView.simclr(image_size=8)(examples)
    collator = DataCollatorForMultiView.simclr(image_size=8, skip_invalid_images=True)
    assert collator(examples)["labels"].tolist() == [0] and collator.num_skipped == 1


def test_user_errors_say_what_to_do():
    with pytest.raises(ValueError, match="channels=2 is not supported"):
        DataCollatorForMultiView(channels=2)
    with pytest.raises(ValueError, match="output_dtype='half'"):
        DataCollatorForMultiView(output_dtype="half")
    with pytest.raises(ValueError, match="example 0 has no 'image' column.*remove_unused_columns=False"):
        DataCollatorForMultiView.simclr(image_size=8)([{"img": INPUTS["pil_RGB"]}])
    with pytest.raises(TypeError, match="cannot read an image from str"):
        DataCollatorForMultiView.simclr(image_size=8)([{"image": "not an image"}])
    with pytest.raises(ValueError, match="grayscale_p=1.5 is not a probability"):
        ViewAugmentation(grayscale_p=1.5)


def test_normalization_from_timm_and_image_processor():
    import timm
    from transformers import ViTImageProcessor

    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    collator = DataCollatorForMultiView.simclr(image_size=8, normalization_source=model)
    assert collator.mean == pytest.approx((0.485, 0.456, 0.406))
    processor = ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    assert DataCollatorForMultiView.dino(global_size=8, local_size=4, normalization_source=processor).std == (0.5, 0.5, 0.5)
    with pytest.raises(TypeError, match="cannot read a normalisation"):
        normalization_from(object())


def test_normalization_from_an_hfssl_backbone_and_method_model():
    from transformers import ViTConfig

    from hfssl.models.simclr import SimCLRConfig, SimCLRModel

    tiny_vit = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16, patch_size=8
    ).to_dict()
    model = SimCLRModel(SimCLRConfig(backbone_model_config=tiny_vit, projection_hidden_dim=16, projection_dim=8))
    model.backbone.data_config = {**model.backbone.data_config, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    expected = ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert normalization_from(model.backbone) == expected and normalization_from(model) == expected
    collator = DataCollatorForMultiView.simclr(image_size=8, normalization_source=model.backbone)
    assert (tuple(collator.mean), tuple(collator.std)) == expected


class TwoViewModel(torch.nn.Module):
    """A tiny conv encoder trained to make the two views' embeddings agree (a stand-in for SimCLR)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 8))

    def forward(self, pixel_values: list[torch.Tensor], labels: torch.Tensor | None = None) -> dict:
        first, second = (torch.nn.functional.normalize(self.encoder(view), dim=1) for view in pixel_values)
        return {"loss": (2 - 2 * (first * second).sum(1)).mean()}


def test_inside_a_trainer_with_an_image_dataset(tmp_path):
    images = [Image.fromarray(RNG.integers(0, 256, (12, 12), dtype=np.uint8)) for _ in range(16)]
    dataset = Dataset.from_dict({"image": images, "label": list(range(16))}, features=Features({"image": ImageFeature(), "label": Value("int64")}))
    model = TwoViewModel()
    before = [p.detach().clone() for p in model.parameters()]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, remove_unused_columns=False, report_to=[], save_strategy="no", use_cpu=True)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollatorForMultiView.simclr(image_size=16, seed=0)).train()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_ssl_trainer_moves_the_photometric_half_to_an_accelerator_and_leaves_it_in_the_collator_on_cpu(tmp_path, monkeypatch):
    # photometric_on_device=None ("auto"): SSLTrainer sets it to True when it trains on an accelerator; on CPU (with
    # or without DataLoader workers), or when given explicitly, the collator keeps it
    from transformers import ViTConfig

    from hfssl.models.simclr import SimCLRConfig, SimCLRModel
    from hfssl.trainers.arguments import SSLTrainingArguments
    from hfssl.trainers.ssl_trainer import SSLTrainer

    tiny_vit = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16, patch_size=8)
    model = SimCLRModel(SimCLRConfig(backbone_model_config=tiny_vit.to_dict(), projection_hidden_dim=16, projection_dim=8))
    for workers, given, expected in ((0, None, None), (2, None, None), (0, True, True)):
        collator = DataCollatorForMultiView.simclr(image_size=16, seed=0, photometric_on_device=given)
        args = SSLTrainingArguments(output_dir=str(tmp_path), dataloader_num_workers=workers, report_to="none", use_cpu=True)
        SSLTrainer(model=model, args=args, data_collator=collator)
        assert collator.photometric_on_device is expected
    # an accelerator, as the trainer sees it (its device reads "meta" once the arguments are set up: no GPU needed)
    for given, expected in ((None, True), (False, False)):
        collator = DataCollatorForMultiView.simclr(image_size=16, seed=0, photometric_on_device=given)
        args = SSLTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
        assert args.device.type == "cpu"
        with monkeypatch.context() as patch:
            patch.setattr(SSLTrainingArguments, "device", property(lambda self: torch.device("meta")))
            SSLTrainer(model=model, args=args, data_collator=collator)
        assert collator.photometric_on_device is expected

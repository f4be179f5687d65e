"""Bad inputs get an error naming the example (or file) and the fix, or a documented skip option; never a crash with
an unrelated message or a silent wrong result: truncated and empty images, 12-bit data in 16-bit images, an MAE mask
ratio of 0, MLM batches with nothing to mask, and text or floats given as token ids."""

import io
import logging
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Image as ImageFeature
from PIL import Image
from torch.utils.data import DataLoader
from transformers import ViTMAEConfig

from conftest import TINY_HEAD
from hfssl import DataCollatorForMaskedLM
from hfssl.augmentations import image_io
from hfssl.augmentations.image_io import to_uint8_chw
from hfssl.collators.masked_image import DataCollatorForMaskedImageModeling
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.collators.pretext import DataCollatorForRotation
from hfssl.collators.span_corruption import DataCollatorForSpanCorruption
from hfssl.data.images import ImageDataArguments, decoded_images, load_image_dataset
from hfssl.data.tokenizer_training import train_unigram_tokenizer
from hfssl.evaluation.features import knn_evaluate
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.cli import train_evaluate_export
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments

RNG = np.random.default_rng(0)


def image_folder(root, classes: tuple[str, ...] = ("cats",)) -> str:
    """`root`/<class>/ folders of 3 readable JPEGs each; the first class also holds a truncated one (the last quarter
    of its bytes cut off). Returns `root`."""
    for name in classes:
        os.makedirs(os.path.join(root, name))
        for index in range(3):
            image = Image.fromarray(RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8))
            image.save(os.path.join(root, name, f"ok{index}.jpg"))
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    with open(os.path.join(root, classes[0], "broken.jpg"), "wb") as handle:
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) * 3 // 4])
    return str(root)


# ---------------------------------------------------------------- 1. a truncated file in an image folder


def test_truncated_file_in_image_folder_is_named_or_skipped(tmp_path, caplog):
    data_args = ImageDataArguments(train_dir=image_folder(tmp_path / "images"))
    dataset = data_args.load()
    # undecoded: datasets would raise "image file is truncated" while fetching, before the collator, naming no file
    assert dataset.features["image"] == ImageFeature(decode=False) and len(dataset) == 4
    collator = DataCollatorForMultiView.simclr(image_size=16, seed=0)
    broken = os.path.join(data_args.train_dir, "cats", "broken.jpg")
    with pytest.raises(ValueError) as error:
        list(DataLoader(dataset, batch_size=4, collate_fn=collator))
    message = str(error.value)
    assert f"file '{broken}'" in message and "image file is truncated" in message
    assert "Remove or repair that image, or pass skip_invalid_images=True to the collator (--skip_invalid_images" in message

    skipping = ImageDataArguments(train_dir=data_args.train_dir, skip_invalid_images=True)
    assert skipping.configure_collator(collator) is collator and collator.skip_invalid_images
    with caplog.at_level(logging.WARNING):
        batches = list(DataLoader(dataset, batch_size=4, collate_fn=collator))
    assert [view.shape[0] for view in batches[0]["pixel_values"]] == [3, 3] and collator.num_skipped == 1
    assert "skipped 1 unreadable images" in caplog.text
    # decode=True (the default of load_image_dataset): PIL images, e.g. for the kNN feature extraction
    assert load_image_dataset(train_dir=data_args.train_dir).features["image"].decode


@pytest.mark.parametrize(
    "make_collator",
    [lambda: DataCollatorForMaskedImageModeling(image_size=16, patch_size=8, seed=0),
     lambda: DataCollatorForRotation(image_size=16, seed=0)],
    ids=["masked_image", "rotation"],
)
def test_truncated_file_is_named_by_the_other_image_collators(tmp_path, make_collator):
    collator = make_collator()
    dataset = ImageDataArguments(train_dir=image_folder(tmp_path / "images")).load()
    examples = [dataset[index] for index in range(len(dataset))]
    broken = next(index for index, example in enumerate(examples) if example["image"]["path"].endswith("broken.jpg"))
    with pytest.raises(ValueError, match=rf"example {broken} \(column 'image', file '.*broken.jpg'\): image file is truncated"):
        collator(examples)
    collator.skip_invalid_images = True
    assert collator(examples)["pixel_values"].shape[0] == 3 * (4 if isinstance(collator, DataCollatorForRotation) else 1)


def test_decoded_images_for_the_knn_leave_unreadable_ones_out_on_request(tmp_path, caplog):
    dataset = ImageDataArguments(train_dir=image_folder(tmp_path / "images")).load()
    with caplog.at_level(logging.WARNING):
        readable = decoded_images(dataset, skip_invalid_images=True)
    assert len(readable) == 3 and readable.features["image"].decode and readable[0]["image"].size == (40, 40)
    assert "left 1 unreadable images of 4 out" in caplog.text
    assert len(decoded_images(dataset)) == 4 and decoded_images(dataset).features["image"].decode


def test_train_evaluate_export_skips_the_truncated_file_in_training_and_knn(tmp_path):
    for split in ("train", "test"):  # a truncated file in train/cats and in test/cats
        image_folder(tmp_path / "data" / split, classes=("cats", "dogs"))
    data_args = ImageDataArguments(train_dir=str(tmp_path / "data"), image_size=16, skip_invalid_images=True)
    model = SimCLRModel(SimCLRConfig(backbone_name="resnet18", small_image_stem=True, **TINY_HEAD))
    collator = data_args.configure_collator(DataCollatorForMultiView.simclr(image_size=16, seed=0))
    args = SSLTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=7, report_to="none",
                                save_strategy="no", use_cpu=True)  # fmt: skip
    trainer = SimCLRTrainer(model=model, args=args, data_collator=collator, train_dataset=data_args.load())
    evaluation = train_evaluate_export(trainer, data_args, method="SimCLR")
    assert collator.num_skipped == 1
    # Random pixels: no floor for the accuracy (measured 0.5 on the 6 readable test images). The check that can fail:
    # it is the kNN of the trained backbone on a copy of the folders without the truncated files (left out of memory
    # and queries with their labels, the others' labels unshifted); coarse, as 6 queries allow only 7 values.
    shutil.copytree(tmp_path / "data", tmp_path / "clean", ignore=shutil.ignore_patterns("broken.jpg"))
    clean = ImageDataArguments(train_dir=str(tmp_path / "clean"), image_size=16)
    train, test = (decoded_images(clean.load(split)) for split in ("train", "test"))
    assert len(train) == len(test) == 6
    config = model.backbone.data_config
    expected = knn_evaluate(model.backbone, train, test, 16, config["mean"], config["std"])
    assert evaluation["kNN top-1 (k=200, T=0.1)"] == pytest.approx(expected)


def test_configure_collator_refuses_other_collators_and_the_recipes_refuse_an_unconfigured_one(wordpiece_tokenizer):
    with pytest.raises(TypeError, match="DataCollatorForMaskedLM has no skip_invalid_images option"):
        ImageDataArguments(skip_invalid_images=True).configure_collator(DataCollatorForMaskedLM(wordpiece_tokenizer))
    # --skip_invalid_images without data_args.configure_collator(collator) is refused before training, not ignored
    trainer = SimpleNamespace(args=None, model=None, accelerator=SimpleNamespace(unwrap_model=lambda model: model),
                              data_collator=DataCollatorForMultiView.simclr(image_size=16))  # fmt: skip
    with pytest.raises(ValueError, match=r"--skip_invalid_images was given but the trainer's collator \(DataCollatorForMultiView\) "
                       r"does not skip unreadable images: pass the collator through data_args.configure_collator"):  # fmt: skip
        train_evaluate_export(trainer, ImageDataArguments(skip_invalid_images=True), method="SimCLR")


# ---------------------------------------------------------------- 2. an empty image (0 x N)


@pytest.mark.parametrize("empty", [Image.new("RGB", (5, 0)), np.zeros((0, 5, 3), dtype=np.uint8), torch.zeros(3, 0, 5)],
                         ids=["pil", "numpy", "tensor"])  # fmt: skip
def test_empty_image_names_the_example_and_its_size_or_is_skipped(empty, caplog):
    examples = [{"image": Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))}, {"image": empty}]
    empty_message = r"example 1 \(column 'image'\): the image is empty \(0 x 5 pixels, H x W\).*skip_invalid_images=True"
    with pytest.raises(ValueError, match=empty_message):
        DataCollatorForMultiView.simclr(image_size=8)(examples)
    with pytest.raises(ValueError, match=r"example 0 .*the image is empty \(0 x 5 pixels"):  # alone: no crash in the fast path
        DataCollatorForMaskedImageModeling(image_size=16, patch_size=8)([examples[1]] * 2)
    collator = DataCollatorForMultiView.simclr(image_size=8, skip_invalid_images=True)
    with caplog.at_level(logging.WARNING):
        assert collator(examples)["pixel_values"][0].shape == (1, 3, 8, 8)
    assert collator.num_skipped == 1 and "skipped 1 unreadable images" in caplog.text


# ---------------------------------------------------------------- 3. 16-bit and 12-bit images


def sixteen_bit(values: np.ndarray, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(values.astype(np.uint16))
    if mode == "I;16B":
        return Image.frombytes("I;16B", values.shape[::-1], values.astype(">u2").tobytes())
    return Image.fromarray(values.astype(np.int32))  # "I"


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_images_map_by_the_full_range_and_twelve_bit_data_warns_once(mode, monkeypatch, caplog):
    monkeypatch.setattr(image_io, "_warned_twelve_bit", False)
    full = np.array([[0, 128, 257 * 7, 257 * 200 + 129, 65535]])  # v / 257: 0, 0.498, 7, 200.502, 255
    image = sixteen_bit(full, mode)
    assert image.mode == mode
    with caplog.at_level(logging.WARNING):
        assert to_uint8_chw(image, channels=1)[0].tolist() == [[0, 0, 7, 201, 255]]
        assert "12-bit" not in caplog.text
        twelve = sixteen_bit(np.array([[0, 1000, 4095]]), mode)
        assert to_uint8_chw(twelve, channels=1)[0].tolist() == [[0, 4, 16]]  # almost black, as documented
        to_uint8_chw(twelve, channels=1)
    warnings = [record.getMessage() for record in caplog.records if "12-bit" in record.getMessage()]
    assert len(warnings) == 1
    assert f"an image of mode {mode} has values up to 4095 only: it looks like 12-bit data" in warnings[0]
    assert "rescale it to 16 bits first, e.g. Image.fromarray(np.asarray(image).astype(np.uint16) << 4)" in warnings[0]
    rescaled = Image.fromarray(np.asarray(twelve).astype(np.uint16) << 4)
    assert to_uint8_chw(rescaled, channels=1)[0].tolist() == [[0, 62, 255]]


def test_sixteen_bit_png_file_through_the_collator(tmp_path):
    values = (np.arange(64).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(values).save(tmp_path / "deep.png")
    reopened = Image.open(tmp_path / "deep.png")
    assert reopened.mode == "I;16"
    identity = DataCollatorForMaskedImageModeling(image_size=8, patch_size=4, crop_scale=(1.0, 1.0), flip_p=0.0, channels=1,
                                                  mean=(0.0,), std=(1.0,))  # fmt: skip
    pixels = identity([{"image": {"bytes": None, "path": str(tmp_path / "deep.png")}}])["pixel_values"]
    expected = torch.from_numpy(((values.astype(np.uint32) + 128) // 257).astype(np.float32) / 255.0)
    torch.testing.assert_close(pixels[0, 0], expected)


# ---------------------------------------------------------------- 4. MAE's mask_ratio


def test_mae_mask_ratio_zero_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"mask_ratio=0.0 must be in \(0, 1\), e.g. 0.75 for MAE: the loss is over the "
                                         r"masked patches only, so with none masked it is NaN"):
        DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, mask_ratio=0.0)
    config = ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mask_ratio=0.0)
    with pytest.raises(ValueError, match=r"mask_ratio=0.0 must be in \(0, 1\)"):
        DataCollatorForMaskedImageModeling.from_model_config(config)
    with pytest.raises(ValueError, match=r"mask_ratio=0.02 of 16 patches rounds to 0 masked patches: the loss is over the "
                                         r"masked patches only, so it would be NaN; raise mask_ratio to at least 0.0625"):
        DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, mask_ratio=0.02)
    with pytest.raises(ValueError, match=r"mask_ratio=1.0 must be in \(0, 1\)"):
        DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, mask_ratio=1.0)
    assert DataCollatorForMaskedImageModeling(image_size=32, patch_size=8, mask_ratio=0.0625).num_masked == 1


# ---------------------------------------------------------------- 5. an MLM batch with nothing to mask


@pytest.mark.parametrize("options", [{}, {"selection": "exact"}, {"span_masking": True}, {"whole_word_mask": True}])
def test_mlm_batch_of_special_tokens_only_is_refused(wordpiece_tokenizer, options):
    collator = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=0, **options)
    special_only = [dict(wordpiece_tokenizer("")), dict(wordpiece_tokenizer("   "))]
    assert [example["input_ids"] for example in special_only] == [[2, 3], [2, 3]]  # [CLS] [SEP]
    with pytest.raises(ValueError, match=r"No example in this batch of 2 has a token that can be masked \(only special "
                                         r"tokens and padding\), so the masked-LM loss would be NaN"):
        collator(special_only)
    with pytest.raises(ValueError, match=r"dataset.filter\(lambda example: len\(example\['input_ids'\]\) > 2\) \(2 special tokens"):
        collator(special_only)
    # one special-only row among ordinary ones is fine: the loss is over the other rows' masked tokens
    mixed = special_only + [dict(wordpiece_tokenizer("the return statement leaves the current function call"))]
    assert (collator(mixed)["labels"][:2] == -100).all()


# ---------------------------------------------------------------- 6. text or floats as token ids


@pytest.fixture(scope="module")
def t5_tokenizer(docs_texts):
    return train_unigram_tokenizer(docs_texts[:400], vocab_size=600)


def test_text_and_float_token_ids_are_refused(wordpiece_tokenizer, t5_tokenizer):
    tokenize_first = r"not token ids; tokenize the text first, e.g. dataset.map\(lambda batch: tokenizer\(batch\['text'\]\), batched=True\)"
    for collator in (DataCollatorForMaskedLM(wordpiece_tokenizer, seed=0), DataCollatorForSpanCorruption(t5_tokenizer, seed=0)):
        with pytest.raises(ValueError, match=rf"Example 1 has text in 'input_ids' \('some raw text'\), {tokenize_first}"):
            collator([{"input_ids": [5, 6, 7, 8]}, {"input_ids": "some raw text"}])
        with pytest.raises(ValueError, match=rf"Example 0 has text in 'input_ids' \('some raw text'\), {tokenize_first}"):
            collator(["some raw text"])  # a list of strings reads as examples of ids
        with pytest.raises(ValueError, match=rf"Example 0 has strings in 'input_ids' \(e.g. 'some'\), {tokenize_first}"):
            collator([{"input_ids": ["some", "raw", "text"]}])
        with pytest.raises(ValueError, match=r"got columns \['text'\]: tokenize the text first"):
            collator([{"text": "some raw text"}])
        not_integers = r"token ids must be integers. Cast them \(e.g. tensor.long\(\)\)"
        with pytest.raises(ValueError, match=rf"Example 1 has non-integer 'input_ids' \(e.g. 6.7, dtype float64\); {not_integers}"):
            collator([{"input_ids": [5, 6, 7, 8]}, {"input_ids": [5.0, 6.7, 7.2, 8.0]}])
        with pytest.raises(ValueError, match=rf"Example 0 has non-integer 'input_ids' \(e.g. 5.0, dtype float32\); {not_integers}"):
            collator([{"input_ids": torch.tensor([5.0, 6.0, 7.0, 8.0])}])
        with pytest.raises(ValueError, match=r"Example 0 has non-integer 'input_ids' \(e.g. None"):
            collator([{"input_ids": [5, None, 7, 8]}])
        with pytest.raises(ValueError, match=r"Example 0 has 'input_ids' of shape \(2, 4\); each example's 'input_ids' "
                                             r"must be one flat sequence"):
            collator([{"input_ids": [[5, 6, 7, 8], [5, 6, 7, 8]]}])
        # integer ids of any integer type still work
        for ids in ([5, 6, 7, 8], np.array([5, 6, 7, 8], dtype=np.int32), torch.tensor([5, 6, 7, 8], dtype=torch.int16)):
            assert collator([{"input_ids": ids}])["input_ids"].dtype == torch.long

"""Checks that need a CUDA GPU (skipped without one): every method trains in bf16 and fp16 on the GPU, the photometric
half of the views runs on the GPU, losses under autocast match float32, kNN on the GPU equals kNN on the CPU, and a
resumed GPU run ends where an uninterrupted one does.

Run on a GPU machine with `python -m pytest tests/test_cuda.py -q`; the rest of the suite runs there too (the
Trainer then places every model on the GPU).
"""

import pytest
import torch
from transformers import AutoModel

from conftest import InterruptAt
from hfssl.collators.multi_view import DataCollatorForMultiView
import hfssl.models  # noqa: F401 (registers the Auto classes)
from hfssl.data.images import load_digits_dataset
from hfssl.evaluation.knn import knn_predict
from hfssl.losses import barlow_twins_loss, clip_loss, dino_loss, nt_xent_loss, vicreg_loss
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments
from hfssl.trainers.methods import image_methods

METHODS = image_methods()  # name -> SSLMethod, from the Auto classes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from test_recipe_ssl import TINY_HEADS, recipe  # recipes/pretrain_ssl.py, registered as a module there


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_on_the_gpu_in_mixed_precision(method, precision, tmp_path):
    arguments = ["--method", method, *TINY_HEADS[method], "--backbone_name", "resnet18",
                 "--output_dir", str(tmp_path), "--max_steps", "4", "--per_device_train_batch_size", "32",
                 "--image_size", "32", "--local_size", "16", "--num_local_crops", "2", "--max_train_samples", "128",
                 "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true", f"--{precision}", "true"]  # fmt: skip
    evaluation = recipe.main(arguments)
    assert 0.0 <= evaluation["kNN top-1 (k=200, T=0.1)"] <= 1.0
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, METHODS[method].model_class)
    assert all(torch.isfinite(tensor).all() for tensor in model.state_dict().values() if tensor.is_floating_point())


def test_photometric_views_are_finished_on_the_gpu(tmp_path):
    dataset = load_digits_dataset(image_size=32).select(range(64))
    collator = DataCollatorForMultiView.simclr(image_size=32, photometric_on_device=True, seed=0)
    batch = collator([dataset[index] for index in range(16)])
    assert all(view.dtype == torch.uint8 for view in batch["pixel_values"])
    on_gpu = {key: (value.cuda() if torch.is_tensor(value) else value) for key, value in batch.items()}
    on_gpu["pixel_values"] = [view.cuda() for view in batch["pixel_values"]]
    on_gpu["photometric_params"] = [
        {key: (value.cuda() if torch.is_tensor(value) else value) for key, value in params.items()}
        for params in batch["photometric_params"]
    ]
    finished_gpu = collator.apply_photometric(on_gpu)["pixel_values"]
    finished_cpu = collator.apply_photometric(batch)["pixel_values"]
    for gpu_view, cpu_view in zip(finished_gpu, finished_cpu):
        assert gpu_view.is_cuda and gpu_view.dtype == torch.float32 and gpu_view.shape == (16, 3, 32, 32)
        torch.testing.assert_close(gpu_view.cpu(), cpu_view, atol=2e-2, rtol=0)  # uint8 rounding may differ by 1

    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_name="resnet18", projection_hidden_dim=32, projection_dim=16))
    args = SSLTrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=16, report_to="none",
                                save_strategy="no", logging_steps=1, disable_tqdm=True, bf16=True)  # fmt: skip
    trainer = SimCLRTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    assert next(model.parameters()).is_cuda
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in trainer.state.log_history if "loss" in entry)


def test_losses_under_bf16_autocast_match_float32():
    generator = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(64, 32, device="cuda", generator=generator)
    b = a + 0.3 * torch.randn(64, 32, device="cuda", generator=generator)
    projection = torch.randn(32, 32, device="cuda", generator=generator) / 32**0.5

    def all_losses(x, y):
        x, y = x @ projection, y @ projection  # runs in bf16 under autocast
        center = torch.zeros(1, 32, device="cuda")
        return {
            "nt_xent": nt_xent_loss(x, y, temperature=0.5),
            "barlow_twins": barlow_twins_loss(x, y).loss,
            "vicreg": vicreg_loss(x, y).loss,
            "clip": clip_loss(x, y, logit_scale=torch.tensor(10.0, device="cuda")),
            "dino": dino_loss([x, y], [y, x], center, teacher_temperature=0.04),
        }

    reference = all_losses(a, b)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = all_losses(a, b)
    for name, value in mixed.items():
        assert torch.isfinite(value), name
        torch.testing.assert_close(value.float(), reference[name], rtol=3e-2, atol=3e-2, msg=name)


def test_knn_on_the_gpu_equals_the_cpu():
    generator = torch.Generator().manual_seed(0)
    memory, labels = torch.randn(20000, 64, generator=generator), torch.randint(0, 10, (20000,), generator=generator)
    queries = torch.randn(1000, 64, generator=generator)
    cpu = knn_predict(memory, labels, queries, num_classes=10, k=20, temperature=0.07)
    gpu = knn_predict(memory.cuda(), labels.cuda(), queries.cuda(), num_classes=10, k=20, temperature=0.07)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
    assert (gpu.argmax(1).cpu() == cpu.argmax(1)).float().mean() > 0.999


def test_resumed_gpu_run_ends_with_the_same_weights(tmp_path):
    dataset = load_digits_dataset(image_size=16).select(range(64))

    def run(output_dir, callbacks=(), resume=None):
        torch.manual_seed(0)
        model = SimCLRModel(SimCLRConfig(backbone_name="resnet18", projection_hidden_dim=32, projection_dim=16))
        args = SSLTrainingArguments(output_dir=str(output_dir), max_steps=6, per_device_train_batch_size=16,
                                    report_to="none", save_strategy="steps", save_steps=3, logging_steps=1,
                                    disable_tqdm=True, seed=0, full_determinism=True)  # fmt: skip
        collator = DataCollatorForMultiView.simclr(image_size=16, blur_p=0.0, seed=0)
        trainer = SimCLRTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}

    straight = run(tmp_path / "straight")
    run(tmp_path / "resumed", callbacks=[InterruptAt(3)])
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "resumed" / "checkpoint-3"))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)

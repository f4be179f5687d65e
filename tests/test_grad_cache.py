"""Cached-gradient (GradCache) backward: the gradient of the large batch, chunk by chunk; its SSLTrainer option."""

import importlib.util
import os

import pytest
import torch
from torch import nn

from hfssl.losses.grad_cache import cached_gradient_backward
from hfssl.losses.nt_xent import nt_xent_loss
from hfssl.losses.temperature import LearnableTemperature
from hfssl.trainers import SimCLRTrainer, SSLTrainer, SSLTrainingArguments

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)


def encoder(dropout: float) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 4))


def two_views(batch=12):
    generator = torch.Generator().manual_seed(3)
    return torch.randn(2, batch, 6, generator=generator)  # (V, N, features)


def loss_of(temperature):
    return lambda embeddings: nt_xent_loss(embeddings[0], embeddings[1], temperature())


def gradients(*modules):
    return [p.grad.clone() for module in modules for p in module.parameters()]


def test_equals_the_full_batch_gradient_without_randomness():
    views = two_views()
    model, temperature = encoder(0.0), LearnableTemperature(0.5)
    full_loss = loss_of(temperature)(model(views))
    full_loss.backward()
    expected = gradients(model, temperature)

    model, temperature = encoder(0.0), LearnableTemperature(0.5)
    loss = cached_gradient_backward(model, loss_of(temperature), list(views.split(5, dim=1)), dim=1)  # chunks 5, 5, 2
    torch.testing.assert_close(loss, full_loss.detach(), rtol=0, atol=1e-6)
    assert not loss.requires_grad
    for got, want in zip(gradients(model, temperature), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert expected[-1].abs() > 0  # the temperature, used only by the loss, gets its gradient too


def test_replays_dropout_masks_and_leaves_the_random_stream_as_one_pass_would():
    """With dropout p=0.5 the second forward of each chunk must draw the masks of the first; the reference embeds the
    same chunks in the same order, with graph, from the same seed."""
    chunks = list(two_views().split(4, dim=1))
    model, temperature = encoder(0.5), LearnableTemperature(0.5)
    torch.manual_seed(7)
    reference_loss = loss_of(temperature)(torch.cat([model(chunk) for chunk in chunks], dim=1))
    reference_loss.backward()
    expected, expected_next = gradients(model, temperature), torch.rand(3)

    model, temperature = encoder(0.5), LearnableTemperature(0.5)
    torch.manual_seed(7)
    loss = cached_gradient_backward(model, loss_of(temperature), chunks, dim=1)
    torch.testing.assert_close(loss, reference_loss.detach(), rtol=0, atol=1e-6)
    for got, want in zip(gradients(model, temperature), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.rand(3), expected_next, rtol=0, atol=0)


def test_custom_backward_scales_every_gradient():
    views = two_views()
    model, temperature = encoder(0.0), LearnableTemperature(0.5)
    cached_gradient_backward(model, loss_of(temperature), list(views.split(6, dim=1)), dim=1)
    once = gradients(model, temperature)
    model, temperature = encoder(0.0), LearnableTemperature(0.5)
    cached_gradient_backward(model, loss_of(temperature), list(views.split(6, dim=1)),
                             backward=lambda loss: (0.25 * loss).backward(), dim=1)  # fmt: skip
    for got, want in zip(gradients(model, temperature), once):
        torch.testing.assert_close(got, 0.25 * want)


def test_errors_name_the_problem():
    model = encoder(0.0)
    with pytest.raises(ValueError, match="needs at least one chunk; received an empty sequence"):
        cached_gradient_backward(model, lambda e: e.sum(), [])
    constant = torch.ones((), requires_grad=True)
    with pytest.raises(ValueError, match="does not depend on the embeddings"):
        cached_gradient_backward(model, lambda e: constant * 2, [torch.randn(3, 6)])


def test_trainer_option_matches_the_plain_batch_in_one_process(tmp_path):
    """SimCLR (no batch statistics) for 2 steps of 12 pairs: chunks of 2 give the weights of the plain batch."""
    states = []
    for chunk_size in (None, 2):
        args = SSLTrainingArguments(
            output_dir=str(tmp_path / str(chunk_size)), max_steps=2, per_device_train_batch_size=12, learning_rate=0.1,
            optim="sgd", train_sampling_strategy="sequential", report_to="none", save_strategy="no", disable_tqdm=True,
            gradient_cache_chunk_size=chunk_size,
        )  # fmt: skip
        trainer = SimCLRTrainer(model=worker.make_model("simclr"), args=args, data_collator=worker.collate,
                                train_dataset=worker.pairs_of_views(24))  # fmt: skip
        trainer.train()
        states.append(trainer.model.state_dict())
    for name, tensor in states[0].items():
        torch.testing.assert_close(states[1][name], tensor, rtol=0, atol=1e-5, msg=name)


def test_trainer_option_validation(tmp_path):
    with pytest.raises(ValueError, match="gradient_cache_chunk_size=0 must be >= 1"):
        SSLTrainingArguments(output_dir=str(tmp_path), gradient_cache_chunk_size=0)

    class Plain(nn.Module):
        def forward(self, pixel_values):
            raise NotImplementedError

    args = SSLTrainingArguments(output_dir=str(tmp_path), gradient_cache_chunk_size=4, report_to="none")
    with pytest.raises(TypeError, match="needs a model with `embed` and `loss_from_embeddings`.*Plain"):
        SSLTrainer(model=Plain(), args=args, data_collator=worker.collate)

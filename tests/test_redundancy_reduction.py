"""Barlow Twins and VICReg: losses against naive loops and hand-computed cases, gradients, models, trainers, cached
gradients, and 2 gloo processes against one process on the global batch."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModel

from conftest import TINY_HEAD, TINY_VIT, torch_threads
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.losses.barlow_twins import barlow_twins_loss
from hfssl.losses.grad_cache import cached_gradient_backward
from hfssl.losses.vicreg import vicreg_loss
from hfssl.models.barlow_twins import BarlowTwinsConfig, BarlowTwinsModel
from hfssl.models.vicreg import VICRegConfig, VICRegModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.redundancy import BarlowTwinsTrainer, VICRegTrainer

WORKER = os.path.join(os.path.dirname(__file__), "redundancy_distributed_worker.py")


def leaf(*shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


# ---- naive references: explicit loops over samples and dimensions ---------------------------------------------------


def column(z, j):
    return [z[n, j] for n in range(z.shape[0])]


def mean(values):
    return sum(values) / len(values)


def reference_barlow_twins(z1, z2, lambda_offdiag, eps=1e-5):
    n, d = z1.shape
    standardised = []
    for z in (z1, z2):
        columns = []
        for j in range(d):
            values = column(z, j)
            m = mean(values)
            variance = mean([(v - m) ** 2 for v in values])  # biased, as BatchNorm
            columns.append([(v - m) / torch.sqrt(variance + eps) for v in values])
        standardised.append(columns)
    a, b = standardised
    on_diagonal = off_diagonal = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            if i == j:
                on_diagonal = on_diagonal + (1 - c) ** 2
            else:
                off_diagonal = off_diagonal + c**2
    return on_diagonal + lambda_offdiag * off_diagonal, on_diagonal, off_diagonal


def reference_vicreg(z1, z2, sim, std, cov, eps=1e-4, gamma=1.0):
    n, d = z1.shape
    invariance = sum((z1[k, j] - z2[k, j]) ** 2 for k in range(n) for j in range(d)) / (n * d)
    variances, covariances = [], []
    for z in (z1, z2):
        means = [mean(column(z, j)) for j in range(d)]
        hinge = 0.0
        for j in range(d):
            variance = sum((z[k, j] - means[j]) ** 2 for k in range(n)) / (n - 1)
            hinge = hinge + torch.clamp(gamma - torch.sqrt(variance + eps), min=0)
        variances.append(hinge / d)
        off = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    c = sum((z[k, i] - means[i]) * (z[k, j] - means[j]) for k in range(n)) / (n - 1)
                    off = off + c**2
        covariances.append(off / d)
    variance = (variances[0] + variances[1]) / 2
    covariance = covariances[0] + covariances[1]
    return sim * invariance + std * variance + cov * covariance, invariance, variance, covariance


def test_barlow_twins_matches_naive_loops_values_and_gradients():
    z1, z2 = leaf(6, 4, seed=0), leaf(6, 4, seed=1)
    got = barlow_twins_loss(z1, z2, lambda_offdiag=0.3)
    want = reference_barlow_twins(z1, z2, 0.3)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    for g, w in zip(torch.autograd.grad(got.loss, [z1, z2]), torch.autograd.grad(want[0], [z1, z2])):
        torch.testing.assert_close(g, w)
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, 0.3).loss, (leaf(4, 3, seed=2), leaf(4, 3, seed=3)))


def test_barlow_twins_hand_computed_two_by_two():
    # With N = 2 (and eps = 0) each standardised column is +-(1, -1), the sign that of (first - second), so every
    # C_ij = s1_i * s2_j. z1 signs (+, -); z2 signs (+, -) -> C = [[1, -1], [-1, 1]]: on 0, off 2.
    z1 = torch.tensor([[1.0, 2.0], [0.0, 5.0]])
    terms = barlow_twins_loss(z1, torch.tensor([[3.0, 0.0], [1.0, 1.0]]), lambda_offdiag=0.1, eps=0.0)
    torch.testing.assert_close(torch.stack(list(terms)), torch.tensor([0.2, 0.0, 2.0]))
    # z2 signs (+, +) -> C = [[1, 1], [-1, -1]]: on (1 - 1)^2 + (1 + 1)^2 = 4, off 2.
    terms = barlow_twins_loss(z1, torch.tensor([[3.0, 1.0], [1.0, 0.0]]), lambda_offdiag=0.1, eps=0.0)
    torch.testing.assert_close(torch.stack(list(terms)), torch.tensor([4.2, 4.0, 2.0]))


def test_vicreg_matches_naive_loops_values_and_gradients():
    z1, z2 = leaf(6, 4, seed=4), leaf(6, 4, seed=5) * 0.5  # std below 1: the variance hinge is active
    got = vicreg_loss(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    want = reference_vicreg(z1, z2, 25.0, 25.0, 1.0)
    assert got.variance > 0
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    for g, w in zip(torch.autograd.grad(got.loss, [z1, z2]), torch.autograd.grad(want[0], [z1, z2])):
        torch.testing.assert_close(g, w)
    a, b = leaf(4, 3, seed=6), leaf(4, 3, seed=7)
    assert torch.autograd.gradcheck(lambda x, y: vicreg_loss(x * 0.5, y, 2.0, 3.0, 0.5).loss, (a, b))


def test_vicreg_hand_computed_two_by_two():
    z1 = torch.tensor([[0.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    z2 = torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    terms = vicreg_loss(z1, z2)  # paper coefficients 25, 25, 1, eps 1e-4
    # invariance: the differences are (0, -1), (0, 1) -> 2 / 4 = 0.5.
    # variance: z1's columns have unbiased variance 2 (std > 1, no hinge); z2's are 2 and 0, the latter's std is
    # sqrt(1e-4) = 0.01 -> hinge 0.99; v(z1) = 0, v(z2) = 0.99 / 2, mean of the branches 0.2475.
    # covariance: Cov(z1) = [[2, 2], [2, 2]] -> (2^2 + 2^2) / 2 = 4; Cov(z2) = [[2, 0], [0, 0]] -> 0.
    expected = [25 * 0.5 + 25 * 0.2475 + 4.0, 0.5, 0.2475, 4.0]
    torch.testing.assert_close(torch.stack(list(terms)), torch.tensor(expected, dtype=torch.float64))


def test_loss_errors_say_what_and_how():
    with pytest.raises(ValueError, match=r"same shape \(N, D\); got \(4, 3\) and \(4, 2\)"):
        barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="needs N >= 2 pairs; got N=1"):
        barlow_twins_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="lambda_offdiag=-1 must be >= 0"):
        barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 3), lambda_offdiag=-1)
    with pytest.raises(ValueError, match=r"vicreg_loss expects z1 and z2 of the same shape"):
        vicreg_loss(torch.randn(4, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="needs N >= 2 pairs .* got N=1"):
        vicreg_loss(torch.randn(1, 3), torch.randn(1, 3))


# ---- models ---------------------------------------------------------------------------------------------------


def make_model(method, **overrides):
    torch.manual_seed(0)
    if method == "barlow_twins":
        return BarlowTwinsModel(BarlowTwinsConfig(backbone_model_config=TINY_VIT, **TINY_HEAD, **overrides))
    return VICRegModel(VICRegConfig(backbone_model_config=TINY_VIT, **TINY_HEAD, **overrides))


def views(batch=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=generator) for _ in range(2)]


def test_paper_defaults_and_config_errors():
    barlow, vicreg = BarlowTwinsConfig(), VICRegConfig()
    assert (barlow.projection_hidden_dim, barlow.projection_dim, barlow.projection_layers, barlow.lambda_offdiag) == (
        8192, 8192, 3, 5e-3)  # fmt: skip
    assert (vicreg.projection_dim, vicreg.sim_coeff, vicreg.std_coeff, vicreg.cov_coeff, vicreg.eps) == (8192, 25, 25, 1, 1e-4)
    with pytest.raises(ValueError, match=r"Barlow Twins head sizes must be positive integers; got \{'projection_dim': 0\}"):
        BarlowTwinsConfig(projection_dim=0)
    with pytest.raises(ValueError, match="lambda_offdiag=-0.1 must be >= 0"):
        BarlowTwinsConfig(lambda_offdiag=-0.1)
    with pytest.raises(ValueError, match=r"VICReg coefficients must be >= 0; got \{'std_coeff': -1.0\}"):
        VICRegConfig(std_coeff=-1.0)
    with pytest.raises(ValueError, match=r"Barlow Twins expects pixel_values as a list of 2 views.*received list of length 3. .*DataCollatorForMultiView.byol\(\)"):
        make_model("barlow_twins")(pixel_values=(views() + views())[:3])


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_model_loss_is_the_loss_of_its_projections_and_round_trips(method, tmp_path):
    model = make_model(method, lambda_offdiag=0.01) if method == "barlow_twins" else make_model(method, cov_coeff=2.0)
    model.eval()
    pixel_values = views()
    output = model(pixel_values=pixel_values)
    z = model.projector(model.backbone(torch.cat(pixel_values)))
    if method == "barlow_twins":
        terms = barlow_twins_loss(z[:6], z[6:], 0.01)
        names = ("barlow/on_diagonal", "barlow/off_diagonal")
    else:
        terms = vicreg_loss(z[:6], z[6:], cov_coeff=2.0)
        names = ("vicreg/invariance", "vicreg/variance", "vicreg/covariance")
    torch.testing.assert_close(output.loss, terms.loss)
    for name, value in zip(names, terms[1:]):
        torch.testing.assert_close(output.metrics[name], value)
    torch.testing.assert_close(output.embeddings, z[:6])
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded(pixel_values=pixel_values).loss, output.loss)


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_cached_gradients_equal_the_full_batch_gradient(method):
    """The loss's statistics come from the whole batch: chunked embedding + cached gradients give the full-batch
    gradient (the heads use LayerNorm here so no layer but the loss has batch statistics)."""
    from distributed_worker import without_batch_statistics

    model = without_batch_statistics(make_model(method))
    pixel_values = views(batch=8)
    model(pixel_values=pixel_values).loss.backward()
    full = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    chunks = [list(pair) for pair in zip(*(view.split(2) for view in pixel_values))]
    output = cached_gradient_backward(model.embed, model.loss_from_embeddings, chunks, dim=1)
    torch.testing.assert_close(output.loss, model(pixel_values=pixel_values).loss)
    # Biases feeding the loss's batch standardisation have a zero gradient in exact arithmetic: what they get is
    # rounding, so the absolute tolerance follows the largest gradient.
    scale = max(gradient.abs().max().item() for gradient in full.values())
    for name, parameter in model.named_parameters():
        if name in full:
            torch.testing.assert_close(parameter.grad, full[name], rtol=1e-4, atol=1e-6 * max(1.0, scale), msg=name)


# ---- trainers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_trainer_moves_every_parameter_and_logs_the_terms(method, digits, tmp_path):
    model = make_model(method)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = SSLTrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3,
                                report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)  # fmt: skip
    trainer_class = BarlowTwinsTrainer if method == "barlow_twins" else VICRegTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=digits,
                            data_collator=DataCollatorForMultiView.byol(image_size=16, seed=0))  # fmt: skip
    trainer.train()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert not torch.equal(before[name], parameter.detach().cpu()), f"{name} did not move"
    logs = trainer.state.log_history[0]
    expected = {"barlow/on_diagonal", "barlow/off_diagonal"} if method == "barlow_twins" else {
        "vicreg/invariance", "vicreg/variance", "vicreg/covariance"}  # fmt: skip
    assert expected | {"loss", "embedding/std"} <= set(logs)
    assert 0 < logs["embedding/std"] < 1


def test_trainers_build_from_a_backbone_name_and_refuse_other_models(tmp_path):
    trainer = VICRegTrainer("resnet18", args=SSLTrainingArguments(output_dir=str(tmp_path), report_to="none"))
    model = trainer.model
    assert isinstance(model, VICRegModel) and model.projector.output_dim == 8192
    assert [view.size for view in trainer.data_collator.views] == [224, 224]
    assert trainer.data_collator.views[1].solarize_p == 0.2  # BYOL's asymmetric views
    with pytest.raises(TypeError, match="BarlowTwinsTrainer needs a BarlowTwinsModel or a backbone name; got VICRegModel"):
        BarlowTwinsTrainer(make_model("vicreg"))
    with pytest.raises(TypeError, match="VICRegTrainer needs a VICRegModel or a backbone name; got BarlowTwinsModel"):
        VICRegTrainer(make_model("barlow_twins"))


# ---- 2 processes against one ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker():
    spec = importlib.util.spec_from_file_location("redundancy_distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_global_batch(worker, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", WORKER, str(tmp_path)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU everywhere
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=environment)
    if completed.returncode != 0 and "terminate called without an active exception" in completed.stderr:
        # A rare gloo abort in C++ with no Python error (see tests/test_distributed.py): retried once.
        completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-5000:]

    for method in worker.METHODS:
        want = worker.loss_run(method, 1)
        for rank in range(2):
            got = torch.load(tmp_path / f"loss_{method}_rank{rank}.pt", weights_only=True)
            torch.testing.assert_close(got["terms"], want["terms"], rtol=1e-12, atol=1e-12, msg=f"{method} loss")
            torch.testing.assert_close(got["gradient"], want["gradient"], rtol=1e-12, atol=1e-12, msg=f"{method} grad")

        with torch_threads(1):
            want = worker.train(method, str(tmp_path / "reference"), 1)
        for rank in range(2):
            got = torch.load(tmp_path / f"train_{method}_rank{rank}.pt", weights_only=True)
            what = f"{method}, rank {rank}"
            torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=1e-5, atol=1e-5,
                                       msg=f"{what}: losses")  # fmt: skip
            assert len(got["losses"]) == worker.STEPS
            for name, values in want["metrics"].items():
                torch.testing.assert_close(torch.tensor(got["metrics"][name]), torch.tensor(values), rtol=1e-5,
                                           atol=1e-5, msg=f"{what}: {name}")  # fmt: skip
            assert set(got["gradients"]) == set(want["gradients"])
            for name, gradient in want["gradients"].items():
                assert gradient.abs().sum() > 0, f"{what}: {name} got no gradient"
                torch.testing.assert_close(got["gradients"][name], gradient, rtol=1e-4, atol=1e-5, msg=f"{what}: {name}")
            for name, tensor in want["state"].items():
                torch.testing.assert_close(got["state"][name], tensor, rtol=1e-4, atol=1e-5, msg=f"{what}: {name}")

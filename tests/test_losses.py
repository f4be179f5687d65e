"""NT-Xent / InfoNCE and the negative-sampling strategies against brute-force per-pair references."""

import math

import pytest
import torch
import torch.nn.functional as F

from hfssl.losses import LearnableTemperature, contrastive_loss_from_logits, info_nce_loss, nt_xent_loss

STRATEGIES = [
    ("uniform", {}),
    ("debiased", {"tau_plus": 0.1}),
    ("hard", {"hardness_beta": 1.0, "tau_plus": 0.1}),
    ("hard", {"hardness_beta": 0.5, "tau_plus": 0.0}),
    ("hardest", {"hardest_k": 3}),
]


def reference_anchor_loss(positive, negatives, temperature, strategy, hardness_beta=1.0, tau_plus=0.1, hardest_k=None):
    """The authors' formulas written for one anchor, in plain (unshifted) exponentials."""
    negatives = list(negatives)
    if strategy == "hardest":
        negatives = sorted(negatives, key=lambda value: -value.detach().item())[:hardest_k]
    p = torch.exp(positive)
    exps = [torch.exp(value) for value in negatives]
    if strategy in ("uniform", "hardest"):
        return -torch.log(p / (p + sum(exps)))
    count = len(negatives)
    beta = hardness_beta if strategy == "hard" else 0.0
    importance = [torch.exp(beta * value) for value in negatives]
    reweighted = sum(w * e for w, e in zip(importance, exps)) / (sum(importance) / count)
    estimate = (-tau_plus * count * p + reweighted) / (1 - tau_plus)
    floor = count * torch.exp(-1.0 / torch.as_tensor(temperature, dtype=p.dtype))
    estimate = torch.maximum(estimate, floor)
    return -torch.log(p / (p + estimate))


def reference_nt_xent(z1, z2, temperature, extra, strategy, **options):
    n = z1.shape[0]
    z = torch.cat([z1, z2])
    losses = []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        cosine = lambda a, b: (a * b).sum() / (a.norm() * b.norm())  # noqa: E731
        positive = cosine(z[i], z[partner]) / temperature
        negatives = [cosine(z[i], z[j]) / temperature for j in range(2 * n) if j not in (i, partner)]
        if extra is not None:
            negatives += [cosine(z[i], row) / temperature for row in extra]
        losses.append(reference_anchor_loss(positive, negatives, temperature, strategy, **options))
    return sum(losses) / len(losses)


def reference_info_nce(query, key, temperature, queue, in_batch):
    losses = []
    for i in range(query.shape[0]):
        cosine = lambda a, b: (a * b).sum() / (a.norm() * b.norm())  # noqa: E731
        positive = cosine(query[i], key[i]) / temperature
        negatives = [cosine(query[i], key[j]) / temperature for j in range(key.shape[0]) if in_batch and j != i]
        if queue is not None:
            negatives += [cosine(query[i], row) / temperature for row in queue]
        losses.append(reference_anchor_loss(positive, negatives, temperature, "uniform"))
    return sum(losses) / len(losses)


def leaf(*shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("strategy,options", STRATEGIES)
@pytest.mark.parametrize("with_queue", [False, True])
def test_nt_xent_matches_per_pair_reference_values_and_gradients(strategy, options, with_queue):
    z1, z2 = leaf(5, 4, seed=0), leaf(5, 4, seed=1)
    queue = leaf(6, 4, seed=2) if with_queue else None
    temperature = 0.3
    loss = nt_xent_loss(z1, z2, temperature, negatives=queue, negative_sampling=strategy, **options)
    inputs = [z1, z2] + ([queue] if with_queue else [])
    grads = torch.autograd.grad(loss, inputs)
    expected = reference_nt_xent(z1, z2, temperature, queue, strategy, **options)
    expected_grads = torch.autograd.grad(expected, inputs)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("in_batch,with_queue", [(True, False), (False, True), (True, True)])
def test_info_nce_matches_per_pair_reference(in_batch, with_queue):
    query, key = leaf(4, 3, seed=3), leaf(4, 3, seed=4)
    queue = leaf(7, 3, seed=5) if with_queue else None
    loss = info_nce_loss(query, key, 0.2, negatives=queue, in_batch_negatives=in_batch)
    expected = reference_info_nce(query, key, 0.2, queue, in_batch)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, [query, key]), torch.autograd.grad(expected, [query, key])):
        torch.testing.assert_close(got, want)


def test_info_nce_moco_v3_scaling_is_two_temperatures():
    query, key = leaf(4, 3, seed=6), leaf(4, 3, seed=7)
    plain = info_nce_loss(query, key, 1.0, in_batch_negatives=True)
    scaled = info_nce_loss(query, key, 1.0, in_batch_negatives=True, scale_by_temperature=True)
    torch.testing.assert_close(scaled, 2.0 * plain)


def test_nt_xent_hand_computed_case():
    # Two pairs, identical views, orthogonal images: positive cosine 1, the two negatives have cosine 0.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = nt_xent_loss(z1, z1.clone(), temperature=0.5)
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 2 * math.exp(0.0)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_gradcheck_of_the_shifted_estimators():
    z1, z2 = leaf(3, 2, seed=8), leaf(3, 2, seed=9)
    for strategy in ("uniform", "debiased", "hard"):
        assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.4, negative_sampling=strategy), (z1, z2))


def test_small_temperature_does_not_overflow():
    z1, z2 = leaf(6, 8, seed=10), leaf(6, 8, seed=11)
    for strategy, options in STRATEGIES:
        loss = nt_xent_loss(z1.float(), z2.float(), 0.005, negative_sampling=strategy, **options)
        assert torch.isfinite(loss), strategy


def test_learnable_temperature_receives_a_gradient_matching_the_reference():
    temperature_module = LearnableTemperature(initial=0.2).double()
    z1, z2 = leaf(4, 3, seed=12), leaf(4, 3, seed=13)
    loss = nt_xent_loss(z1, z2, temperature_module())
    (grad,) = torch.autograd.grad(loss, [temperature_module.log_temperature])
    log_t = temperature_module.log_temperature.detach().clone().requires_grad_()
    expected = reference_nt_xent(z1, z2, log_t.exp(), None, "uniform")
    (expected_grad,) = torch.autograd.grad(expected, [log_t])
    torch.testing.assert_close(grad, expected_grad)
    assert grad.abs() > 0


def test_mixed_keeps_the_hardest_and_random_others():
    negatives = torch.tensor([[5.0, 1.0, 4.0, 0.0, 3.0, 2.0]])
    positive = torch.tensor([6.0])
    everything = contrastive_loss_from_logits(positive, negatives, 0.5, "uniform")
    all_random = contrastive_loss_from_logits(positive, negatives, 0.5, "mixed", hardest_k=2, num_random=4)
    torch.testing.assert_close(all_random, everything)
    hardest_only = contrastive_loss_from_logits(positive, negatives, 0.5, "hardest", hardest_k=2)
    expected = -positive + torch.logsumexp(torch.tensor([6.0, 5.0, 4.0]), dim=0)
    torch.testing.assert_close(hardest_only, expected)
    generator = torch.Generator().manual_seed(0)
    one_random = contrastive_loss_from_logits(
        positive, negatives, 0.5, "mixed", hardest_k=2, num_random=1, generator=generator
    )
    candidates = [-positive + torch.logsumexp(torch.tensor([6.0, 5.0, 4.0, other]), 0) for other in (3.0, 2.0, 1.0, 0.0)]
    assert any(torch.allclose(one_random, candidate) for candidate in candidates)


def test_hard_with_beta_zero_equals_debiased():
    z1, z2 = leaf(5, 4, seed=14), leaf(5, 4, seed=15)
    hard = nt_xent_loss(z1, z2, 0.5, negative_sampling="hard", hardness_beta=0.0, tau_plus=0.05)
    debiased = nt_xent_loss(z1, z2, 0.5, negative_sampling="debiased", tau_plus=0.05)
    torch.testing.assert_close(hard, debiased)


def test_errors_say_what_was_received_and_allowed():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="negative_sampling='nearest' is not supported; choose one of"):
        nt_xent_loss(z, z, negative_sampling="nearest")
    with pytest.raises(ValueError, match=r"same shape \(N, D\); got \(4, 3\) and \(3, 3\)"):
        nt_xent_loss(z, z[:3])
    with pytest.raises(ValueError, match="needs hardest_k >= 1"):
        nt_xent_loss(z, z, negative_sampling="hardest")
    with pytest.raises(ValueError, match=r"tau_plus=1.0 must lie in \[0, 1\)"):
        nt_xent_loss(z, z, negative_sampling="debiased", tau_plus=1.0)
    with pytest.raises(ValueError, match="info_nce_loss has no negatives"):
        info_nce_loss(z, z)
    with pytest.raises(ValueError, match="needs 0 < minimum <= initial <= maximum"):
        LearnableTemperature(initial=2.0)


def test_loss_decreases_when_views_agree():
    torch.manual_seed(0)
    z1 = F.normalize(torch.randn(8, 16), dim=1)
    noisy = z1 + 2.0 * torch.randn(8, 16)
    close = z1 + 0.01 * torch.randn(8, 16)
    assert nt_xent_loss(z1, close, 0.2) < nt_xent_loss(z1, noisy, 0.2)

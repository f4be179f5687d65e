"""Linear probe on frozen features: a separable toy set is solved, the sweep picks by validation, errors explain."""

import pytest
import torch

from hfssl.evaluation.linear_probe import linear_probe


def _toy(n_per_class: int, seed: int, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes at the corners of a square in 2 of 8 dimensions (the other 6 are noise): linearly separable
    with a margin of 1 against Gaussian noise of std 0.3 (a 3.3-sigma margin)."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    labels = torch.arange(4).repeat_interleave(n_per_class)
    features = torch.randn(len(labels), 8, generator=generator) * noise
    features[:, :2] += corners[labels]
    return features * 5 + 3, labels  # an offset and scale the standardisation must undo


def test_linear_probe_separates_a_toy_set():
    train, train_labels = _toy(100, seed=0)
    test, test_labels = _toy(100, seed=1)
    result = linear_probe(train, train_labels, test, test_labels)
    # Bayes error: per coordinate P(noise > 1) = P(z > 3.33) = 4.3e-4, so <= 0.1% of the 400 test points are on
    # the wrong side; 5 sigma of a binomial(400, 1e-3) is 3.2 points, so >= 98% with a wide margin.
    assert result.accuracy >= 0.98
    assert set(result.validation_accuracy) == {(lr, wd) for lr in (1e-3, 1e-2, 1e-1) for wd in (0.0, 1e-4)}
    assert result.validation_accuracy[(result.learning_rate, result.weight_decay)] == max(result.validation_accuracy.values())
    logits = result.classifier(test)
    assert logits.shape == (400, 4)
    assert (logits.argmax(1) == test_labels).float().mean().item() == result.accuracy


def test_linear_probe_single_setting_without_test_and_errors():
    train, labels = _toy(20, seed=2)
    result = linear_probe(train, labels, learning_rates=[1e-1], weight_decays=[0.0], validation_fraction=0.0, epochs=20)
    assert (result.learning_rate, result.weight_decay) == (1e-1, 0.0) and result.validation_accuracy == {}
    assert result.accuracy >= 0.95
    with pytest.raises(ValueError, match=r"train_features \(N, D\) and train_labels \(N,\)"):
        linear_probe(train, labels[:5])
    with pytest.raises(ValueError, match="validation_fraction=0.0 must lie in"):
        linear_probe(train, labels, validation_fraction=0.0)
    with pytest.raises(ValueError, match="both test_features and test_labels"):
        linear_probe(train, labels, test_features=train)

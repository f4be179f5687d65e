"""The embedding map and the training curves are written as non-empty PNG files."""

import json

import pytest
import torch

from hfssl.evaluation.plots import plot_embeddings, plot_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plot_embeddings_writes_a_png(tmp_path):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    features = torch.randn(60, 8, generator=generator) + 5 * torch.eye(8)[labels]
    path = plot_embeddings(features, labels, tmp_path / "sub" / "tsne.png", class_names=["a", "b", "c"], max_points=50)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    with pytest.raises(ValueError, match=r"features \(N, D\) and labels \(N,\)"):
        plot_embeddings(features, labels[:10], tmp_path / "bad.png")


def test_plot_training_curves_from_history_and_trainer_state(tmp_path):
    history = [{"loss": 5.0 - step / 10, "embedding/std": 0.1, "step": step} for step in range(1, 11)]
    history += [{"eval_knn/top1": 0.2 + step / 100, "step": step} for step in (5, 10)]
    path = plot_training_curves(history, tmp_path / "curves.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 5000
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"log_history": history[:3]}))
    assert plot_training_curves(state, tmp_path / "from_state.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="no loss, '\\*/top1' or 'embedding/std'"):
        plot_training_curves([{"learning_rate": 1e-3, "step": 1}], tmp_path / "none.png")

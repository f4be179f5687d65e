"""The embedding map, the training curves and the reconstruction grid: written as PNG files, and read back as figures
(axes, labels, ticks, reference lines, images) rather than pixels."""

import json
import math

import numpy as np
import pytest
import torch

from hfssl.evaluation.plots import (
    embeddings_figure,
    plot_embeddings,
    plot_reconstructions,
    plot_training_curves,
    reconstructions_figure,
    training_curves_figure,
    unnormalize,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def clustered_features():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    return torch.randn(60, 8, generator=generator) + 5 * torch.eye(8)[labels], labels


def test_plot_embeddings_writes_a_png(tmp_path):
    features, labels = clustered_features()
    path = plot_embeddings(features, labels, tmp_path / "sub" / "tsne.png", class_names=["a", "b", "c"], max_points=50)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    with pytest.raises(ValueError, match=r"features \(N, D\) and labels \(N,\)"):
        plot_embeddings(features, labels[:10], tmp_path / "bad.png")


def test_the_embedding_map_is_titled_with_the_model_and_its_knn_accuracy():
    features, labels = clustered_features()
    figure = embeddings_figure(features, labels, model_name="outputs/simclr", knn_top1=0.912, k=20)
    (axis,) = figure.axes
    assert "outputs/simclr" in axis.get_title() and "kNN top-1 91.2% (k=20)" in axis.get_title()
    assert [entry.get_text() for entry in axis.get_legend().get_texts()] == ["0", "1", "2"]


# three logging steps: matplotlib's default ticks would read 1.00, 1.25, 1.50, ...
HISTORY = [{"loss": 5.0 - step / 10, "learning_rate": 1e-3 * step, "embedding/std": 0.1, "step": step}
           for step in (1, 2, 3)]  # fmt: skip
HISTORY[0]["embedding/dim"] = 64
HISTORY += [{"eval_loss": 4.0, "eval_knn/top1": 0.2 + step / 100, "step": step} for step in (2, 3)]


def test_training_curves_have_labelled_panels_integer_steps_and_the_healthy_std():
    figure = training_curves_figure(HISTORY, train_batch_size=32)
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["train loss (batches of 32 per device)", "eval loss", "learning rate", "accuracy", "embedding/std"]
    for axis in figure.axes:
        assert axis.get_ylabel() and axis.get_xlabel() == "optimizer step"
        ticks = [tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks), f"{axis.get_title()}: {ticks}"
    train_loss, eval_loss = figure.axes[0], figure.axes[1]  # separate axes: their means are over different batches
    assert [line.get_label() for line in train_loss.lines] == ["loss"]
    assert [line.get_label() for line in eval_loss.lines] == ["eval_loss"]
    std_axis = figure.axes[4]
    reference = [line for line in std_axis.lines if "healthy" in line.get_label()]
    assert len(reference) == 1 and reference[0].get_ydata()[0] == pytest.approx(1 / math.sqrt(64))
    assert "1/sqrt(P)" in reference[0].get_label() and "L2-normalised, P=64" in reference[0].get_label()


def test_plot_training_curves_from_history_and_trainer_state(tmp_path):
    path = plot_training_curves(HISTORY, tmp_path / "curves.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 5000
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"log_history": HISTORY[:3], "train_batch_size": 8}))
    assert plot_training_curves(state, tmp_path / "from_state.png").stat().st_size > 5000
    assert training_curves_figure(state).axes[0].get_title() == "train loss (batches of 8 per device)"
    with pytest.raises(ValueError, match="no loss, '\\*/top1' or 'embedding/std'"):
        plot_training_curves([{"learning_rate": 1e-3, "step": 1}], tmp_path / "none.png")


def shown_images(figure):
    return [axis.images[0] for axis in figure.axes]


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_reconstructions_are_shown_in_grayscale_at_their_aspect(channels, tmp_path):
    generator = torch.Generator().manual_seed(0)
    gray = torch.rand(4, 1, 12, 20, generator=generator).expand(-1, channels, -1, -1)  # 3 channels: replicated
    mean, std = (0.5,) * channels, (0.25,) * channels
    normalised = (gray - 0.5) / 0.25
    rows = {"original": normalised, "reconstruction": normalised.flip(0)}
    figure = reconstructions_figure(rows, mean, std)
    images = shown_images(figure)
    assert len(images) == 8  # 2 rows x 4 images
    for image in images:
        assert image.get_array().shape == (12, 20) and image.get_cmap().name == "gray"
        assert image.axes.get_aspect() == 1.0
    np.testing.assert_allclose(images[0].get_array(), gray[0, 0].numpy(), atol=1e-5)  # un-normalised
    assert [axis.get_ylabel() for axis in figure.axes[::4]] == ["original", "reconstruction"]
    assert plot_reconstructions(rows, mean, std, tmp_path / "grid.png").read_bytes().startswith(PNG_SIGNATURE)


def test_colour_reconstructions_stay_in_colour_and_the_normalisation_must_match_the_channels():
    colour = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images = shown_images(reconstructions_figure({"original": colour}, (0.0,), (1.0,)))
    assert all(image.get_array().shape == (8, 8, 3) for image in images)
    with pytest.raises(ValueError, match=r"3 channels cannot be un-normalised with mean=\(0.5, 0.5\)"):
        unnormalize(colour, (0.5, 0.5), (0.5, 0.5))

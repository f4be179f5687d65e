"""Collapse signals (effective rank against its formula), the collapse guard inside a real Trainer run, and the
photometric half of the augmentation finished on the training device by SSLTrainer."""

import logging

import numpy as np
import pytest
import torch

from conftest import TINY_HEAD, TINY_VIT
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments, effective_rank
from hfssl.trainers.collapse import embedding_std


def reference_effective_rank(matrix: np.ndarray, eps: float = 1e-7) -> float:
    """RankMe, eq. 1 of Garrido et al. 2023, in float64 numpy on the centred matrix."""
    centred = matrix - matrix.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    p = singular / singular.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def test_effective_rank_matches_the_formula_and_its_extremes():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(64, 16, generator=generator) @ torch.diag(torch.linspace(0.1, 2.0, 16))
    assert effective_rank(embeddings).item() == pytest.approx(reference_effective_rank(embeddings.double().numpy()), rel=1e-4)
    wide = torch.randn(16, 40, generator=generator) @ torch.randn(40, 40, generator=generator)  # P > B: the B x B Gram
    assert effective_rank(wide).item() == pytest.approx(reference_effective_rank(wide.double().numpy()), rel=1e-4)
    line = torch.randn(32, 1, generator=generator) * torch.randn(1, 8, generator=generator)  # every row on one line
    assert effective_rank(line).item() == pytest.approx(1.0, abs=1e-3)
    # Centred orthogonal directions of equal length: all singular values equal, rank = the number of directions.
    basis = torch.cat([torch.eye(8), -torch.eye(8)])  # 16 points, mean 0, 8 equal singular values
    assert effective_rank(basis).item() == pytest.approx(8.0, rel=1e-5)
    assert effective_rank(torch.ones(4, 3)).item() == 1.0  # a point: no spread at all
    with pytest.raises(ValueError, match=r"needs embeddings of shape \(B >= 2, P\); got \(1, 3\)"):
        effective_rank(torch.ones(1, 3))


def test_embedding_std_is_about_one_over_sqrt_dim_when_spread_and_zero_when_collapsed():
    spread = torch.randn(4096, 64, generator=torch.Generator().manual_seed(0))
    assert embedding_std(spread).item() * 8 == pytest.approx(1.0, abs=0.02)
    assert embedding_std(torch.ones(16, 64)).item() == 0.0


class CollapsedSimCLR(SimCLRModel):
    """SimCLR whose reported embeddings are one point: what a collapsed model logs."""

    def forward(self, pixel_values, labels=None, **kwargs):
        output = super().forward(pixel_values)
        output.embeddings = torch.ones_like(output.embeddings)
        return output


@pytest.fixture(scope="module")
def digits(digits_train):  # 64 images (batches of 16), not conftest's 32
    return digits_train.select(range(64))


def run(model_class, digits, tmp_path, **overrides):
    torch.manual_seed(0)
    model = model_class(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD))
    values = dict(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=16, learning_rate=1e-3,
                  report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
                  collapse_check_start=0, collapse_patience=2)  # fmt: skip
    values.update(overrides)
    trainer = SimCLRTrainer(model=model, args=SSLTrainingArguments(**values), train_dataset=digits,
                            data_collator=DataCollatorForMultiView.simclr(image_size=16, blur_p=0.0, seed=0))  # fmt: skip
    trainer.train()
    return trainer


def test_collapse_guard_stops_a_collapsed_run_after_patience_logging_steps(digits, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hfssl.trainers.collapse"):
        trainer = run(CollapsedSimCLR, digits, tmp_path, collapse_action="stop")
    assert trainer.state.global_step == 2  # patience 2, one log per step
    messages = [record.getMessage() for record in caplog.records]
    assert any("Collapse detected at step 2: embedding/std = 0 is below 0.05" in m and "Stopping" in m for m in messages)
    assert any("embedding/effective_rank = 1 is below 1.5" in message for message in messages)
    logged = [entry for entry in trainer.state.log_history if "embedding/effective_rank" in entry]
    assert logged and all(entry["embedding/effective_rank"] == 1.0 for entry in logged)


def test_collapse_guard_warns_once_and_lets_training_go_on(digits, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hfssl.trainers.collapse"):
        trainer = run(CollapsedSimCLR, digits, tmp_path, collapse_action="warn")
    assert trainer.state.global_step == 6
    std_warnings = [r for r in caplog.records if "embedding/std" in r.getMessage()]
    assert len(std_warnings) == 1


def test_a_healthy_run_is_not_flagged_and_logs_both_signals(digits, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hfssl.trainers.collapse"):
        trainer = run(SimCLRModel, digits, tmp_path, collapse_action="stop")
    assert trainer.state.global_step == 6 and not caplog.records
    logs = [entry for entry in trainer.state.log_history if "embedding/std" in entry]
    assert len(logs) == 6 and all(1.5 < entry["embedding/effective_rank"] <= 8 for entry in logs)


def test_collapse_arguments_are_validated():
    with pytest.raises(ValueError, match="collapse_action='halt' is not supported; use 'warn', 'stop' or 'none'"):
        SSLTrainingArguments(output_dir="unused", collapse_action="halt")
    with pytest.raises(ValueError, match="collapse_patience=0 must be >= 1"):
        SSLTrainingArguments(output_dir="unused", collapse_patience=0)


def test_trainer_finishes_uint8_crops_on_the_device_like_the_collator_would(digits, tmp_path):
    examples = [digits[index] for index in range(8)]
    on_device = DataCollatorForMultiView.simclr(image_size=16, seed=3, photometric_on_device=True)
    on_cpu = DataCollatorForMultiView.simclr(image_size=16, seed=3)
    batch, expected = on_device(examples), on_cpu(examples)
    assert batch["pixel_values"][0].dtype == torch.uint8
    trainer = run(SimCLRModel, digits, tmp_path, max_steps=2)
    trainer.data_collator = on_device
    finished = trainer.finish_views(batch)
    assert "photometric_params" not in finished
    for view, reference in zip(finished["pixel_values"], expected["pixel_values"]):
        torch.testing.assert_close(view, reference, atol=1e-5, rtol=0)
    # A whole run on the uint8 batches: the photometric half runs inside compute_loss.
    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD))
    args = SSLTrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none",
                                save_strategy="no", logging_steps=1, disable_tqdm=True)  # fmt: skip
    trainer = SimCLRTrainer(model=model, args=args, train_dataset=digits, data_collator=on_device)
    trainer.train()
    assert np.isfinite(trainer.state.log_history[0]["loss"])
    trainer.data_collator = lambda examples: examples  # a collator without apply_photometric
    with pytest.raises(TypeError, match="has no `apply_photometric`.*photometric_on_device=True"):
        trainer.finish_views(batch)

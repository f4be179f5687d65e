"""The SimCLR and MoCo recipes run end to end on the built-in digits (a few steps) and save a loadable model."""

import subprocess
import sys

import pytest
from transformers import AutoModel

import hfssl.models  # noqa: F401


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["pretrain_simclr", "pretrain_moco"])
def test_recipe_runs_and_reports_knn(recipe, tmp_path):
    command = [sys.executable, f"recipes/{recipe}.py", "--output_dir", str(tmp_path), "--max_steps", "2",
               "--per_device_train_batch_size", "16", "--image_size", "16", "--projection_hidden_dim", "32",
               "--max_train_samples", "64", "--logging_steps", "1", "--report_to", "none"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(result.stdout.split("knn_top1=")[1].split()[0])
    assert 0.0 <= accuracy <= 1.0
    model = AutoModel.from_pretrained(tmp_path)
    assert type(model).__name__ == ("SimCLRModel" if recipe == "pretrain_simclr" else "MoCoModel")

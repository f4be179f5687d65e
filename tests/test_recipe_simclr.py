"""The SimCLR and MoCo recipes run end to end on the built-in digits (a few steps) and save a loadable model; MoCo's
recipe refuses a queue size for v3."""

import os
import runpy
import sys

import pytest
from transformers import AutoModel

import hfssl.models  # noqa: F401


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["pretrain_simclr", "pretrain_moco"])
def test_recipe_runs_and_reports_knn(recipe, tmp_path, monkeypatch, capsys):
    # The command line, run in this process (a subprocess would spend ~10 s re-importing torch and transformers).
    path = os.path.join(os.path.dirname(__file__), "..", "recipes", f"{recipe}.py")
    monkeypatch.setattr(sys, "argv", [path, "--output_dir", str(tmp_path), "--max_steps", "2",
                                      "--per_device_train_batch_size", "16", "--image_size", "16",
                                      "--projection_hidden_dim", "32", "--max_train_samples", "64", "--logging_steps",
                                      "1", "--report_to", "none"]
                        + (["--batch_norm_splits", "2"] if recipe == "pretrain_moco" else []))  # fmt: skip
    runpy.run_path(path, run_name="__main__")
    accuracy = float(capsys.readouterr().out.split("knn_top1=")[1].split()[0])
    assert 0.0 <= accuracy <= 1.0
    model = AutoModel.from_pretrained(tmp_path)
    assert type(model).__name__ == ("SimCLRModel" if recipe == "pretrain_simclr" else "MoCoModel")
    if recipe == "pretrain_moco":  # shuffle BN from the command line, kept in the saved config
        assert model.config.batch_norm_splits == 2


def test_moco_recipe_refuses_a_queue_size_with_v3_and_keeps_v2_default():
    recipe = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "recipes", "pretrain_moco.py"), run_name="pretrain_moco")
    arguments = recipe["ModelArguments"]
    with pytest.raises(ValueError, match=r"--queue_size 1024 is not used by --variant v3 .* drop --queue_size, or use --variant v2"):
        arguments(variant="v3", queue_size=1024)
    assert arguments(variant="v3").queue_size is None and arguments(variant="v3", queue_size=0).queue_size == 0
    assert arguments().queue_size == 4096 and arguments(queue_size=1024).queue_size == 1024  # v2 as before
    with pytest.raises(ValueError, match="is not used by --variant v3"):  # from the command line too
        recipe["parse_recipe_arguments"]((arguments,), ["--variant", "v3", "--queue_size", "512"])

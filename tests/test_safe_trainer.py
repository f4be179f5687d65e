"""SafeTrainer and hfssl.trainers.checkpoints: checkpoints appear only complete, incomplete folders are skipped with a
warning, rotation keeps a complete checkpoint, a finished run stays finished, non-finite inputs / losses / weights
stop training (or skip the step) with a message naming the step and the tensor; the recipes' resume resolution and
tokenizer reuse; deterministic tokenizer training."""

import hashlib
import logging
import os

import pytest
import torch
from torch import nn
from transformers import TrainerCallback, TrainingArguments, default_data_collator

from hfssl import NonFiniteError, SafeTrainer, last_complete_checkpoint
from hfssl.cli import parse_recipe_arguments
from hfssl.data.tokenizer_training import load_or_train_tokenizer
from hfssl.trainers.checkpoints import resolve_resume_from_checkpoint


class Regression(nn.Module):
    """y = w x + b with the mean squared error; `nan_from_forward` multiplies the loss by log(-1) (nan), a nan made
    by the forward pass from finite inputs and parameters."""

    def __init__(self, nan_from_forward: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 1)
        self.nan_from_forward = nan_from_forward

    def forward(self, x, y):
        loss = ((self.linear(x).squeeze(-1) - y) ** 2).mean()
        if self.nan_from_forward:
            loss = loss * torch.log(torch.tensor(-1.0))
        return {"loss": loss}


def dataset(count=32, nan_example=None):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, 4, generator=generator)
    if nan_example is not None:
        x[nan_example, 2] = float("nan")
    return [{"x": x[i], "y": x[i].sum()} for i in range(count)]


def arguments(path, **overrides):
    values = dict(output_dir=str(path), max_steps=4, per_device_train_batch_size=8, learning_rate=0.01, report_to="none",
                  save_strategy="steps", save_steps=1, logging_steps=1, disable_tqdm=True, seed=0, use_cpu=True)
    return TrainingArguments(**{**values, **overrides})


def test_checkpoints_appear_complete_and_the_staging_folder_goes(tmp_path):
    seen = []

    class Look(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(sorted(os.listdir(tmp_path)) if tmp_path.exists() else [])

    SafeTrainer(model=Regression(), args=arguments(tmp_path), train_dataset=dataset(), callbacks=[Look()]).train()
    assert sorted(os.listdir(tmp_path)) == [f"checkpoint-{step}" for step in (1, 2, 3, 4)]
    for name in os.listdir(tmp_path):
        assert os.path.isfile(tmp_path / name / "trainer_state.json") and os.path.isfile(tmp_path / name / "model.safetensors")
    assert seen[0] == [] and seen[1] == ["checkpoint-1"]  # only published, complete checkpoints are ever visible


def test_incomplete_checkpoints_are_skipped_with_a_warning_and_refused_by_path(tmp_path, caplog):
    SafeTrainer(model=Regression(), args=arguments(tmp_path, max_steps=2), train_dataset=dataset()).train()
    partial = tmp_path / "checkpoint-3"  # what a kill under plain Trainer leaves: weights written, no trainer_state
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')  # cut short
    with caplog.at_level(logging.WARNING, logger="hfssl.trainers.checkpoints"):
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert "checkpoint-3" in caplog.text and "checkpoint-4" in caplog.text and "incomplete" in caplog.text
    with pytest.raises(ValueError, match="incomplete checkpoint.*resume_from_checkpoint=True"):
        resolve_resume_from_checkpoint(str(partial), str(tmp_path))
    with pytest.raises(ValueError, match="no complete checkpoint-N folder"):
        resolve_resume_from_checkpoint(True, str(tmp_path / "empty"))

    trainer = SafeTrainer(model=Regression(), args=arguments(tmp_path, max_steps=4, save_total_limit=1), train_dataset=dataset())
    trainer.train(resume_from_checkpoint=True)  # from checkpoint-2; the step-3 and step-4 folders are replaced
    assert trainer.state.global_step == 4
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4"]  # rotation kept the newest complete checkpoint only
    assert os.path.isfile(tmp_path / "checkpoint-4" / "trainer_state.json")


def test_rotation_never_deletes_the_only_complete_checkpoint(tmp_path):
    SafeTrainer(model=Regression(), args=arguments(tmp_path, max_steps=1), train_dataset=dataset()).train()
    for step in (7, 8):  # incomplete folders with higher steps must not count towards the limit
        (tmp_path / f"checkpoint-{step}").mkdir()
    args = arguments(tmp_path, max_steps=2, save_total_limit=1, save_steps=5)  # no save before the end
    SafeTrainer(model=Regression(), args=args, train_dataset=dataset()).train(resume_from_checkpoint=True)
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")


def test_a_finished_run_stays_finished(tmp_path, caplog):
    SafeTrainer(model=Regression(), args=arguments(tmp_path, max_steps=3), train_dataset=dataset(24)).train()
    weights = (tmp_path / "checkpoint-3" / "model.safetensors").read_bytes()
    for _ in range(2):
        trainer = SafeTrainer(model=Regression(), args=arguments(tmp_path, max_steps=3), train_dataset=dataset(24))
        with caplog.at_level(logging.WARNING, logger="hfssl.trainers.safe_trainer"):
            trainer.train(resume_from_checkpoint=True)
        assert trainer.state.global_step == 3
    assert "the run has finished" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert (tmp_path / "checkpoint-3" / "model.safetensors").read_bytes() == weights


def test_a_non_finite_input_stops_training_naming_the_step_and_example(tmp_path):
    trainer = SafeTrainer(model=Regression(), args=arguments(tmp_path), train_dataset=dataset(nan_example=13))
    with pytest.raises(NonFiniteError, match=r"Step (\d): input x, example/row \d of 8 .* is not finite") as error:
        trainer.train()
    step = int(error.value.args[0].split(":")[0].split()[1])
    assert last_complete_checkpoint(str(tmp_path)) == (str(tmp_path / f"checkpoint-{step - 1}") if step > 1 else None)


def test_a_non_finite_loss_stops_training_and_skip_drops_the_step(tmp_path, caplog):
    model = Regression(nan_from_forward=True)
    with pytest.raises(NonFiniteError, match="Step 1: the loss is nan .*forward pass produced it"):
        SafeTrainer(model=model, args=arguments(tmp_path / "stop"), train_dataset=dataset()).train()
    assert not (tmp_path / "stop").exists() or os.listdir(tmp_path / "stop") == []

    args = arguments(tmp_path / "skip", save_strategy="no")
    args.skip_non_finite_steps = True  # SSLTrainingArguments has the field; any arguments object may carry it
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with caplog.at_level(logging.WARNING, logger="hfssl.trainers.safe_trainer"):
        trainer = SafeTrainer(model=model, args=args, train_dataset=dataset())
        trainer.train()
    assert trainer.state.global_step == 4 and caplog.text.count("Skipping step") == 4
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter.detach(), before[name]), f"{name} moved in a skipped step"


def test_no_checkpoint_is_written_over_non_finite_weights(tmp_path):
    class Diverge(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                with torch.no_grad():
                    model.linear.weight[0, 1] = float("inf")

    trainer = SafeTrainer(model=Regression(), args=arguments(tmp_path), train_dataset=dataset(), callbacks=[Diverge()])
    with pytest.raises(NonFiniteError, match=r"Not saving the checkpoint of step 3: parameter linear.weight"):
        trainer.train()
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")


def test_recipes_resume_from_the_output_dir_and_reuse_its_tokenizer(tmp_path, docs_texts, wordpiece_tokenizer):
    from hfssl.data.text import train_wordpiece_tokenizer

    assert parse_recipe_arguments((TrainingArguments,), ["--output_dir", str(tmp_path)])[0].resume_from_checkpoint is None
    with pytest.raises(ValueError, match="no complete checkpoint"):
        parse_recipe_arguments((TrainingArguments,), ["--output_dir", str(tmp_path), "--resume_from_checkpoint", "true"])
    trainer = SafeTrainer(model=Regression(), args=arguments(tmp_path, max_steps=2), train_dataset=dataset(),
                          processing_class=wordpiece_tokenizer, data_collator=default_data_collator)
    trainer.train()
    for argv in ([], ["--resume_from_checkpoint", "true"]):
        (args,) = parse_recipe_arguments((TrainingArguments,), ["--output_dir", str(tmp_path), *argv])
        assert args.resume_from_checkpoint == str(tmp_path / "checkpoint-2")

    def retrain():
        raise AssertionError("the tokenizer of a resumed run must not be trained again")

    tokenizer = load_or_train_tokenizer(None, retrain, args)
    assert tokenizer.get_vocab() == wordpiece_tokenizer.get_vocab()
    other = tmp_path / "other-tokenizer"
    train_wordpiece_tokenizer(docs_texts[:200], vocab_size=300).save_pretrained(other)
    with pytest.raises(ValueError, match="differs from the one the resumed run was trained with"):
        load_or_train_tokenizer(str(other), retrain, args)


def test_trained_tokenizers_are_the_same_every_time(docs_texts):
    """tokenizers' WordPiece and Unigram trainers depend on hash-map order (seeded anew for every map); ours not."""
    from hfssl.data.text import train_wordpiece_tokenizer
    from hfssl.data.tokenizer_training import train_unigram_tokenizer

    def digest(tokenizer):
        return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()

    texts = docs_texts[:400]
    for train in (lambda: train_wordpiece_tokenizer(texts, vocab_size=600), lambda: train_unigram_tokenizer(texts, 600)):
        assert len({digest(train()) for _ in range(3)}) == 1
    wordpiece = train_wordpiece_tokenizer(texts, vocab_size=600)
    assert len(wordpiece) == 600 and wordpiece.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]
    assert "##a" not in [str(token) for token in wordpiece.backend_tokenizer.get_added_tokens_decoder().values()]
    assert wordpiece.tokenize("##a") == ["#", "#", "a"]  # continuation pieces are not matched as special tokens


def test_the_best_checkpoint_is_tracked_kept_and_loaded(tmp_path):
    args = arguments(tmp_path, max_steps=6, eval_strategy="steps", eval_steps=1, save_total_limit=2, label_names=["y"],
                     load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=True)
    # "best" = the highest eval loss: an early checkpoint that rotation must keep while newer ones come and go
    trainer = SafeTrainer(model=Regression(), args=args, train_dataset=dataset(), eval_dataset=dataset(16))
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and os.path.dirname(best) == str(tmp_path)  # not the staging folder
    kept = sorted(os.listdir(tmp_path))
    assert best != str(tmp_path / "checkpoint-6") and kept == sorted([os.path.basename(best), "checkpoint-6"])
    state = (tmp_path / "checkpoint-6" / "trainer_state.json").read_text()
    assert f'"best_model_checkpoint": "{best}"' in state

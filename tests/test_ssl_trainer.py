"""SSLTrainer: real steps of each method on an Image-column dataset, exact resume, optimiser groups, eval loss."""

import pytest
import torch
from transformers import TrainingArguments

from conftest import TINY_HEAD, TINY_VIT, InterruptAt
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.optim import LARS
from hfssl.trainers import MoCoTrainer, SimCLRTrainer, SSLTrainer, SSLTrainingArguments


def collator():
    return DataCollatorForMultiView.simclr(image_size=16, blur_p=0.0, seed=0)


def arguments(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3,
                  report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)
    values.update(overrides)
    return SSLTrainingArguments(**values)


def make_model(method):
    torch.manual_seed(0)
    if method == "simclr":
        return SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, learnable_temperature=True, **TINY_HEAD))
    if method == "moco_v2":
        return MoCoModel(MoCoConfig(variant="v2", backbone_model_config=TINY_VIT, queue_size=16, **TINY_HEAD))
    return MoCoModel(MoCoConfig(variant="v3", backbone_model_config=TINY_VIT, predictor_hidden_dim=16, **TINY_HEAD))


@pytest.mark.parametrize("method", ["simclr", "moco_v2", "moco_v3"])
def test_every_trainable_parameter_moves_and_metrics_are_logged(method, digits, tmp_path):
    model = make_model(method)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer_class = SimCLRTrainer if method == "simclr" else MoCoTrainer
    trainer = trainer_class(model=model, args=arguments(tmp_path), data_collator=collator(), train_dataset=digits)
    trainer.train()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert not torch.equal(before[name], parameter.detach().cpu()), f"{name} did not move"
    logs = trainer.state.log_history[0]
    assert {"loss", "contrastive/temperature", "contrastive/positive_cosine", "embedding/std"} <= set(logs)
    assert 0 < logs["embedding/std"] < 1
    dims = [entry["embedding/dim"] for entry in trainer.state.log_history if "embedding/dim" in entry]
    assert dims == [TINY_HEAD["projection_dim"]]  # logged once, for the plots' 1/sqrt(P) line
    if method != "simclr":
        assert "teacher/momentum" in logs
        students = [n for n, p in model.named_parameters() if n.startswith(("backbone.", "projector.")) and p.requires_grad]
        teachers = dict(model.named_parameters())
        for name in students:
            assert not torch.equal(before[f"teacher_{name}"], teachers[f"teacher_{name}"].cpu()), f"teacher_{name} did not move"
    if method == "moco_v2":
        assert model.queue_pointer.item() == (3 * 8) % 16


def test_resume_from_checkpoint_is_exact(digits, tmp_path):
    """MoCo v2 with LARS: 4 steps straight == 2 steps, then resume_from_checkpoint for 2 more (teacher, queue,
    pointer, LARS momentum, scheduler and the collator's generator all come back)."""
    straight = make_model("moco_v2")
    args = arguments(tmp_path / "straight", max_steps=4, lars=True, learning_rate=0.1, save_strategy="steps", save_steps=2)
    SSLTrainer(model=straight, args=args, data_collator=collator(), train_dataset=digits).train()

    args = arguments(tmp_path / "interrupted", max_steps=4, lars=True, learning_rate=0.1, save_strategy="steps", save_steps=2)
    SSLTrainer(model=make_model("moco_v2"), args=args, data_collator=collator(), train_dataset=digits,
               callbacks=[InterruptAt(2)]).train()
    interrupted = make_model("moco_v2")  # a fresh process: new model, new collator
    SSLTrainer(model=interrupted, args=args, data_collator=collator(), train_dataset=digits).train(
        resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-2")
    )
    straight_state, resumed_state = straight.state_dict(), interrupted.state_dict()
    assert resumed_state["queue_pointer"].item() == straight_state["queue_pointer"].item() == 0
    differing = [name for name, tensor in straight_state.items() if not torch.equal(resumed_state[name], tensor)]
    assert differing == [], f"differ after resume: {differing}"


def test_resume_with_dataloader_workers_warns_that_the_views_differ(digits, tmp_path, caplog):
    import logging

    args = arguments(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    SSLTrainer(model=make_model("simclr"), args=args, data_collator=collator(), train_dataset=digits).train()
    for workers in (0, 1):
        caplog.clear()
        args = arguments(tmp_path, max_steps=2, dataloader_num_workers=workers)
        trainer = SSLTrainer(model=make_model("simclr"), args=args, data_collator=collator(), train_dataset=digits)
        with caplog.at_level(logging.WARNING, logger="hfssl.trainers.ssl_trainer"):
            trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
        assert ("re-seed their augmentation generators" in caplog.text) == (workers > 0)


def test_channels_last_computes_the_same_and_resumes_exactly(digits, tmp_path):
    """`channels_last=True` on a timm ResNet (MoCo v2: teacher and queue): weights and views in channels-last format,
    the same losses and weights as the default format (up to float rounding), and exact resume."""

    def resnet_moco():
        torch.manual_seed(0)
        return MoCoModel(MoCoConfig(variant="v2", backbone_name="test_resnet", queue_size=16, **TINY_HEAD))

    def run(name, channels_last, **kwargs):
        # SGD: updates proportional to the gradients (Adam's m / sqrt(v) turns rounding noise in a near-zero gradient
        # into a full-size step of either sign, so weights of the two formats could differ by ~lr on some CPUs)
        args = arguments(tmp_path / name, max_steps=4, channels_last=channels_last, save_strategy="steps", save_steps=2,
                         optim="sgd", learning_rate=0.05)
        model = resnet_moco()
        trainer = SSLTrainer(model=model, args=args, data_collator=collator(), train_dataset=digits,
                             callbacks=kwargs.pop("callbacks", None))
        trainer.train(**kwargs)
        return model, trainer

    default, default_trainer = run("default", False)
    fast, fast_trainer = run("channels_last", True)
    convs = [p for n, p in fast.named_parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(not p.is_contiguous() for p in convs)  # 1x1 kernels are both; the 3x3 ones are channels-last only
    batch = next(iter(fast_trainer.get_train_dataloader()))
    views = fast_trainer.finish_views(batch)["pixel_values"]
    assert all(view.is_contiguous(memory_format=torch.channels_last) for view in views)
    losses = [[entry["loss"] for entry in trainer.state.log_history if "loss" in entry] for trainer in (default_trainer, fast_trainer)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for name, tensor in default.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[name], tensor, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}")

    run("interrupted", True, callbacks=[InterruptAt(2)])
    resumed, _ = run("interrupted", True, resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-2"))
    differing = [name for name, tensor in fast.state_dict().items() if not torch.equal(resumed.state_dict()[name], tensor)]
    assert differing == [], f"differ after resume: {differing}"


def test_no_weight_decay_on_norms_biases_and_lars(digits, tmp_path):
    model = make_model("simclr")
    trainer = SSLTrainer(model=model, args=arguments(tmp_path, lars=True, weight_decay=1e-4, learning_rate=0.3),
                         data_collator=collator(), train_dataset=digits)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, LARS)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert decayed and all(dict(model.named_parameters())[n].ndim > 1 for n in decayed)
    assert "temperature.log_temperature" not in decayed and not any("norm" in n or n.endswith("bias") for n in decayed)


def test_evaluation_reports_the_ssl_loss_without_labels(digits, tmp_path):
    trainer = SSLTrainer(model=make_model("simclr"), args=arguments(tmp_path, per_device_eval_batch_size=8),
                         data_collator=collator(), eval_dataset=digits)
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0 and "eval_embedding/std" in metrics


def test_pitfalls_raise_helpful_errors(digits, tmp_path):
    plain = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    with pytest.raises(ValueError, match="remove_unused_columns=True would drop the image column"):
        SSLTrainer(model=make_model("simclr"), args=plain, data_collator=collator())
    viewless = make_model("simclr")
    viewless.views_for = lambda config: None  # a model that declares no paper views
    with pytest.raises(ValueError, match="needs a multi-view `data_collator`"):
        SSLTrainer(model=viewless, args=arguments(tmp_path))
    # a model that declares its paper views trains with plain SSLTrainer (a new method needs no trainer class)
    assert SSLTrainer(model=make_model("simclr"), args=arguments(tmp_path)).data_collator.views[0].size > 0
    with pytest.raises(TypeError, match="SimCLRTrainer needs a SimCLRModel or a backbone name; got MoCoModel"):
        SimCLRTrainer(model=make_model("moco_v2"))
    with pytest.raises(ValueError, match="teacher_momentum=1.5 must lie in"):
        arguments(tmp_path, teacher_momentum=1.5)


def test_without_a_collator_the_views_take_the_data_size_and_the_size_is_recorded(tmp_path, caplog):
    """32 px digits and a timm backbone whose data config says 160 px: the default views are 32 px (not upsampled to
    the backbone's size), the choice is logged with the fix, and what training saw is recorded on the trainer and in
    the saved config."""
    from hfssl.data.images import load_digits_dataset

    digits32 = load_digits_dataset(image_size=32).select(range(16))
    torch.manual_seed(0)
    model = MoCoModel(MoCoConfig(variant="v2", backbone_name="test_resnet", queue_size=16, **TINY_HEAD))
    assert model.backbone.data_config["input_size"][-1] == 160
    with caplog.at_level("INFO", logger="hfssl.trainers.image_size"):
        trainer = MoCoTrainer(model=model, args=arguments(tmp_path, max_steps=1), train_dataset=digits32)
    assert [view.size for view in trainer.data_collator.views] == [32, 32]
    assert "views at 32 px" in caplog.text and "DataCollatorForMultiView.moco_v2(image_size=32)" in caplog.text
    trainer.train()
    assert trainer.training_image_size == 32 and model.config.training_image_size == 32
    assert model.backbone.data_config["input_size"] == model.teacher_backbone.data_config["input_size"] == (3, 32, 32)
    model.save_pretrained(tmp_path / "saved")
    assert MoCoModel.from_pretrained(tmp_path / "saved").backbone.data_config["input_size"] == (3, 32, 32)


def test_without_readable_data_the_views_take_the_backbone_size_with_a_warning(tmp_path, caplog):
    torch.manual_seed(0)
    model = MoCoModel(MoCoConfig(variant="v2", backbone_name="test_resnet", queue_size=16, **TINY_HEAD))
    with caplog.at_level("WARNING", logger="hfssl.trainers.image_size"):
        trainer = MoCoTrainer(model=model, args=arguments(tmp_path))
    assert trainer.data_collator.views[0].size == 160 and trainer.training_image_size == 160
    assert "at 160 px, the backbone's data_config input size, because no train_dataset was given" in caplog.text
    assert "data_collator=DataCollatorForMultiView.moco_v2(image_size=32)" in caplog.text


def test_a_given_collator_sets_the_recorded_size(digits, tmp_path):
    trainer = SimCLRTrainer(model=make_model("simclr"), args=arguments(tmp_path, max_steps=1), data_collator=collator(),
                            train_dataset=digits)
    assert trainer.training_image_size == 16

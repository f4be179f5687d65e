"""What every image-SSL recipe (SimCLR, MoCo, BYOL, SimSiam, DINO, SwAV, Barlow Twins, VICReg) shares: the backbone
options, and the end of the story: train, save, measure kNN, export the encoder with a model card, push."""

from __future__ import annotations

import logging
import os
from typing import Any

from hfssl.data.images import ImageDataArguments, decoded_images
from hfssl.evaluation.features import knn_evaluate
from hfssl.export import native_export_problem, resolve_backbone, save_backbone

logger = logging.getLogger(__name__)


def check_push_possible(model: Any, training_args: Any, encoder: str = "backbone") -> str | None:
    """Refuse, before training, an `encoder` the model does not have (`--export_encoder`) or a push whose encoder could
    not be exported natively. Returns that export problem, or None."""
    backbone, _ = resolve_backbone(model, encoder)  # a TypeError naming the model's encoders, before any training
    problem = native_export_problem(backbone)  # e.g. a small-image stem plain timm cannot rebuild
    if training_args.push_to_hub and problem:
        raise ValueError(problem)
    return problem


def train_evaluate_export(trainer: Any, data_args: ImageDataArguments, method: str, encoder: str = "backbone") -> dict[str, float]:
    """Train, save the full model to `output_dir`, measure the weighted-kNN top-1 (k=200, T=0.1) of the model's
    `encoder` (`"backbone"`, or `"teacher_backbone"` for an EMA teacher) when the data has labels and a test split,
    then (main process) export that encoder in its library's own format with a model card to `output_dir/export`
    (`trainer.create_model_card`) and push that folder when `--push_to_hub` was given (`trainer.push_to_hub`;
    `check_push_possible` first).

    Every process must call it: the kNN feature extraction is split between processes.

    Returns:
        The evaluation written into the model card, e.g. `{"kNN top-1 (k=200, T=0.1)": 0.93}`.

    Raises:
        ValueError: before training, when `--skip_invalid_images` was given but the trainer's collator does not skip
            (build it through `data_args.configure_collator(collator)`).
    """
    args, model = trainer.args, trainer.accelerator.unwrap_model(trainer.model)
    if data_args.skip_invalid_images and not getattr(trainer.data_collator, "skip_invalid_images", False):
        raise ValueError(
            f"--skip_invalid_images was given but the trainer's collator ({type(trainer.data_collator).__name__}) "
            "does not skip unreadable images: pass the collator through data_args.configure_collator(collator) "
            "before building the trainer."
        )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    backbone, _ = resolve_backbone(model, encoder)
    train, evaluation = trainer.train_dataset, {}
    if "label" in train.column_names:
        try:
            test = data_args.load("test")
        except ValueError:
            test = None
        if test is not None and "label" in test.column_names:
            # PIL images for the feature extraction, without the unreadable ones training skipped
            train, test = (decoded_images(dataset, data_args.skip_invalid_images) for dataset in (train, test))
            data_config = backbone.data_config
            accuracy = knn_evaluate(backbone, train, test, data_args.image_size, data_config["mean"], data_config["std"])
            evaluation["kNN top-1 (k=200, T=0.1)"] = accuracy
            logger.info("kNN top-1 (k=200, T=0.1): %.4f", accuracy)
            if trainer.is_world_process_zero():
                print(f"knn_top1={accuracy:.4f}")
    if not trainer.is_world_process_zero():
        return evaluation
    problem = native_export_problem(backbone)
    if problem:
        logger.warning("No native encoder export: %s", problem)
        return evaluation
    export_dir = save_backbone(model, os.path.join(args.output_dir, "export"), encoder=encoder, image_size=data_args.image_size)
    trainer.create_model_card(folder=export_dir, method=method, dataset=data_args.describe(), metrics=evaluation,
                              encoder=encoder)
    print(f"Encoder, model card and full model exported to {export_dir}")
    if args.push_to_hub:
        print(f"Pushed: {trainer.push_to_hub()}")
    return evaluation

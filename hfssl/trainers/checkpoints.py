"""Crash-safe checkpoints: a `checkpoint-N` folder appears only once it is complete, so a run killed at any moment
(preemption, the OOM killer, a reboot) resumes from its last complete checkpoint with no hand fix.

`SafeTrainer` lets Trainer write each checkpoint into `<output_dir>/.incomplete-checkpoints/checkpoint-N`, then
publishes it (`publish_checkpoint`: fsync, then one atomic rename to `<output_dir>/checkpoint-N`). Rotation
(`save_total_limit`) counts complete checkpoints only, never deletes the newest one, and moves a folder into the
staging folder before deleting it. Folders that lack a readable `trainer_state.json` (written last by Trainer), e.g.
from a run killed under plain `transformers.Trainer`, are skipped with a warning that names them. The recipes also
resume on their own from a complete checkpoint in `--output_dir` (as transformers' example scripts do).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

STAGING_DIR = ".incomplete-checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def is_complete_checkpoint(path: str) -> bool:
    """Whether `path` is a checkpoint folder Trainer finished writing: its `trainer_state.json` (the last file
    Trainer writes) reads as JSON with a `global_step`."""
    try:
        with open(os.path.join(path, TRAINER_STATE_NAME), encoding="utf-8") as file:
            return "global_step" in json.load(file)
    except (OSError, ValueError):
        return False


def complete_checkpoints(output_dir: str, warn: bool = True) -> list[str]:
    """The complete `checkpoint-N` folders of `output_dir`, oldest step first; incomplete ones are skipped (with a
    warning naming them when `warn`)."""
    if not os.path.isdir(output_dir):
        return []
    found = sorted(
        (int(match.group(1)), os.path.join(output_dir, name))
        for name in os.listdir(output_dir)
        if (match := _CHECKPOINT_NAME.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    complete = [path for _, path in found if is_complete_checkpoint(path)]
    incomplete = [path for _, path in found if path not in complete]
    if incomplete and warn:
        logger.warning(
            "Skipping incomplete checkpoint folder(s) %s (no readable %s: the run that wrote them was interrupted "
            "while saving). They are never resumed from; delete them when convenient.",
            ", ".join(incomplete), TRAINER_STATE_NAME,
        )
    return complete


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The path of the complete checkpoint with the highest step in `output_dir`, or None when there is none.

    Use it to restart an interrupted run: `trainer.train(resume_from_checkpoint=last_complete_checkpoint(output_dir))`
    resumes when there is a checkpoint and starts afresh when there is none."""
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume_from_checkpoint(value: Any, output_dir: str, auto: bool = False) -> str | None:
    """The checkpoint to resume from, checked.

    Args:
        value (`str`, `bool` or `None`): `True` or "true"/"last" for the last complete checkpoint of `output_dir`
            (an error when there is none, as Trainer does); a path (must be a complete checkpoint); `None`/`False`.
        output_dir (`str`): the run's output folder.
        auto (`bool`, defaults to `False`): with `value=None`, resume from the last complete checkpoint of
            `output_dir` when there is one (what the recipes do when rerun into the same folder).
    """
    word = value.strip().lower() if isinstance(value, str) else None
    if value is True or word in {"true", "last", "yes", "1"}:
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise ValueError(
                f"resume_from_checkpoint=True, but {output_dir!r} holds no complete checkpoint-N folder to resume from. "
                "Start without resume_from_checkpoint, or point it at a checkpoint folder."
            )
        return last
    if value is None or value is False or word in {"false", "no", "0", "none", ""}:
        last = last_complete_checkpoint(output_dir) if auto else None
        if last is not None:
            logger.info("Found %s in output_dir: resuming from it (use another --output_dir to start afresh).", last)
        return last
    path = str(value)
    if not os.path.isdir(path):
        raise ValueError(f"resume_from_checkpoint={path!r} is not a folder. Pass a checkpoint-N folder, or True.")
    if not is_complete_checkpoint(path):
        raise ValueError(
            f"{path} is an incomplete checkpoint (no readable {TRAINER_STATE_NAME}: its run was interrupted while "
            f"saving it). Resume from the last complete one with resume_from_checkpoint=True (recipes: "
            "--resume_from_checkpoint true)."
        )
    return path


def fsync_tree(path: str) -> None:
    """Flush every file under `path`, then the folders themselves, to disk."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as file:
                os.fsync(file.fileno())
        fsync_folder(root)


def fsync_folder(path: str) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(descriptor)
    os.close(descriptor)


def publish_checkpoint(staged: str, final: str) -> None:
    """Make the complete checkpoint `staged` visible as `final`: fsync it, then rename it in one step. An existing
    `final` (a stale or incomplete folder of the same step) is first renamed aside, then deleted."""
    fsync_tree(staged)
    parent = os.path.dirname(final)
    aside = os.path.join(os.path.dirname(staged), os.path.basename(final) + ".replaced")
    if os.path.exists(final):
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    os.replace(staged, final)
    shutil.rmtree(aside, ignore_errors=True)
    fsync_folder(parent)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(staged))  # the staging folder, once empty


def rotate_complete_checkpoints(output_dir: str, save_total_limit: int | None, keep: set[str]) -> None:
    """Delete the oldest complete checkpoints beyond `save_total_limit`, never one in `keep` (the newest and the
    best). Incomplete folders are not counted (and not touched), so the only complete checkpoint is never deleted."""
    if not save_total_limit or save_total_limit <= 0:
        return
    checkpoints = complete_checkpoints(output_dir, warn=False)
    keep = {os.path.normpath(path) for path in keep if path}
    excess = len(checkpoints) - max(save_total_limit, len(keep))
    for path in checkpoints:
        if excess <= 0:
            break
        if os.path.normpath(path) not in keep:
            discard_folder(path)
            excess -= 1


def discard_folder(path: str) -> None:
    """Delete a checkpoint folder so that a kill midway leaves no half-deleted `checkpoint-N` in sight: it is first
    renamed into the staging folder (one step), then deleted there."""
    staging = os.path.join(os.path.dirname(path), STAGING_DIR)
    os.makedirs(staging, exist_ok=True)
    doomed = os.path.join(staging, os.path.basename(path) + ".deleted")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(staging)

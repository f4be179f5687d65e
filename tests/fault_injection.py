"""Fault injection: SIGKILL a tiny training run at random moments, restart it the way the README says, and check that
it ends bitwise equal to an uninterrupted run (weights, optimizer, scheduler, RNG states, the collator's generator,
the loss history).

    python tests/fault_injection.py --method simclr --kills 20 --seed 0     # by hand; prints one JSON line
    python tests/fault_injection.py --method all --kills 20

Methods: SimCLR, MoCo v2 (a queue of 2 batches: it wraps every 2 steps), DINO (centre, teacher, temperature and
weight-decay schedules) on a tiny ViT, and the MLM recipe (`recipes/pretrain_mlm.py`, tokenizer trained on the fly).
Restarts: `trainer.train(resume_from_checkpoint=last_complete_checkpoint(output_dir))` for the trainers, and the same
recipe command again for the MLM recipe (it resumes from the last complete checkpoint in `--output_dir`).

Kill moments cycle through: a few ms after a checkpoint's staging folder appears (mid-write), a few ms after a
complete checkpoint appears (rotation, the next step), and a random moment 0-3 logged steps into a restart (0: during
start-up or the first step after the restart). They are drawn from `random.Random(seed)`, so a failure names its
seed.

Every run is a forked child of this process (it imports torch and hfssl once and never computes with torch itself,
so the children start in milliseconds): a SIGKILL of the child is a real kill of a training process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("simclr", "moco_v2", "dino", "mlm")
MODES = ("writing", "published", "random")
STEPS, SAVE_STEPS = 24, 2
MLM_ARGS = ["--preset", "tiny", "--vocab_size", "300", "--max_seq_length", "32", "--max_train_samples", "200",
            "--validation_split_percentage", "2", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size",
            "32", "--warmup_steps", "2", "--logging_steps", "1", "--save_strategy", "steps", "--report_to", "none",
            "--disable_tqdm", "true", "--use_cpu", "true", "--seed", "0", "--dataloader_num_workers", "0",
            "--save_total_limit", "2"]  # fmt: skip


def fresh_tqdm_locks() -> None:
    """New tqdm write locks for this forked (re)start. tqdm shares one multiprocessing lock between the forked
    processes; a sibling SIGKILLed while it held that lock (e.g. inside `datasets`' progress bars) leaves it taken
    forever, and this run would block on it. A restarted user run is a new process, which does not share it."""
    import threading

    import tqdm.std

    tqdm.std.TqdmDefaultWriteLock.th_lock = threading.RLock()
    tqdm.std.TqdmDefaultWriteLock.mp_lock = multiprocessing.get_context("fork").RLock()
    classes = [tqdm.std.tqdm]
    while classes:  # tqdm.auto's class (datasets' thread_map) keeps its own lock once it has made one
        cls = classes.pop()
        classes += cls.__subclasses__()
        if "_lock" in vars(cls):
            del cls._lock
    tqdm.std.tqdm.set_lock(tqdm.std.TqdmDefaultWriteLock())


def train(method: str, output_dir: str, max_steps: int) -> None:
    """One (re)start of the run, as a user restarts it (its output goes to `<output_dir>.log`)."""
    log = os.open(output_dir + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered: the parent counts the logged steps
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    torch.set_num_threads(1)
    fresh_tqdm_locks()
    if method == "mlm":
        sys.path.insert(0, str(ROOT / "recipes"))
        import pretrain_mlm

        sys.argv = ["pretrain_mlm.py", *MLM_ARGS, "--output_dir", output_dir, "--max_steps", str(max_steps),
                    "--save_steps", str(SAVE_STEPS), "--train_file", text_file(os.path.dirname(output_dir))]  # fmt: skip
        pretrain_mlm.main()
        return
    from transformers import ViTConfig

    from hfssl import last_complete_checkpoint
    from hfssl.collators.multi_view import DataCollatorForMultiView
    from hfssl.data.images import load_digits_dataset
    from hfssl.models.dino import DINOConfig, DINOModel
    from hfssl.models.moco import MoCoConfig, MoCoModel
    from hfssl.models.simclr import SimCLRConfig, SimCLRModel
    from hfssl.trainers import DINOTrainer, DINOTrainingArguments, MoCoTrainer, SimCLRTrainer, SSLTrainingArguments

    vit = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16,
                    patch_size=8).to_dict()  # fmt: skip
    head = {"projection_hidden_dim": 16, "projection_dim": 8}
    torch.manual_seed(0)
    settings = dict(output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=8, learning_rate=1e-3,
                    report_to="none", save_strategy="steps", save_steps=SAVE_STEPS, save_total_limit=2,
                    logging_steps=1, disable_tqdm=True, seed=0)  # fmt: skip
    if method == "simclr":
        model, trainer_class, args = SimCLRModel(SimCLRConfig(backbone_model_config=vit, **head)), SimCLRTrainer, SSLTrainingArguments(**settings)
        collator = DataCollatorForMultiView.simclr(image_size=16, blur_p=0.0, seed=0)
    elif method == "moco_v2":
        model = MoCoModel(MoCoConfig(variant="v2", backbone_model_config=vit, queue_size=16, **head))
        trainer_class, args = MoCoTrainer, SSLTrainingArguments(**settings)
        collator = DataCollatorForMultiView.simclr(image_size=16, blur_p=0.0, seed=0)
    else:
        model = DINOModel(DINOConfig(backbone_model_config=vit, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16,
                                     warmup_teacher_temperature_steps=max_steps // 2,
                                     freeze_last_layer_steps=max_steps // 4))  # fmt: skip
        trainer_class, args = DINOTrainer, DINOTrainingArguments(**settings)
        collator = DataCollatorForMultiView.dino(global_size=16, local_size=8, num_local_crops=2, seed=0)
    dataset = load_digits_dataset(image_size=16).select(range(40))  # 5 batches an epoch: resumes land mid-epoch
    trainer = trainer_class(model=model, args=args, data_collator=collator, train_dataset=dataset)
    trainer.train(resume_from_checkpoint=last_complete_checkpoint(output_dir))


def text_file(folder: str) -> str:
    """A small training text (CPython's bundled pydoc topics, one paragraph a line) for the MLM recipe."""
    path = os.path.join(folder, "pydoc_topics.txt")
    if not os.path.exists(path):
        from pydoc_data.topics import topics

        paragraphs = [" ".join(p.split()) for text in topics.values() for p in text.split("\n\n")]
        Path(path).write_text("\n".join(p for p in paragraphs if len(p) > 40) + "\n")
    return path


def preload() -> None:
    """Import (no torch computation) what the children use, so each fork starts training at once."""
    sys.path.insert(0, str(ROOT / "recipes"))
    import pretrain_mlm  # noqa: F401
    import sklearn.datasets  # noqa: F401
    from transformers import ModernBertForMaskedLM, ViTModel  # noqa: F401

    import hfssl  # noqa: F401


def entries(folder: str) -> set[str]:
    """The names in a folder and in its staging folder (`staging/NAME`)."""
    def listing(path: str) -> list[str]:
        # The training process creates and removes these folders while we look: a folder gone is an empty one.
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    names = set(listing(folder))
    names |= {f"staging/{name}" for name in listing(os.path.join(folder, ".incomplete-checkpoints"))}
    return names


def logged_steps(output_dir: str) -> int:
    """How many training steps the run's log (`<output_dir>.log`, all restarts) has printed (`logging_steps=1`)."""
    try:
        with open(output_dir + ".log", encoding="utf-8", errors="replace") as file:
            return file.read().count("'loss': ")
    except FileNotFoundError:
        return 0


def kill_when(process: multiprocessing.Process, mode: str, delay: float, output_dir: str, timeout: float,
              steps: int = 0) -> bool:
    """SIGKILL `process` `delay` seconds after the event `mode`: a new staging folder ("writing"), a new complete
    checkpoint ("published"), or `steps` newly logged training steps ("random"; with 0, the start of the process).
    False when the process ended first."""
    start, before, logged = time.monotonic(), entries(output_dir), logged_steps(output_dir)
    prefix = "staging/checkpoint-" if mode == "writing" else "checkpoint-"
    fired_at = start if mode == "random" and steps == 0 else None
    while process.is_alive():
        now = time.monotonic()
        if fired_at is None:
            if mode == "random" and logged_steps(output_dir) >= logged + steps:
                fired_at = now
            elif mode != "random" and any(name.startswith(prefix) for name in entries(output_dir) - before):
                fired_at = now
        if fired_at is not None and now >= fired_at + delay:
            process.kill()
            process.join()
            return True
        if now - start > timeout:
            process.kill()
            raise TimeoutError(f"a restart ran for over {timeout:.0f} s")
        time.sleep(0.0005)
    return False


def run_once(method: str, output_dir: str, max_steps: int) -> int:
    context = multiprocessing.get_context("fork")
    process = context.Process(target=train, args=(method, output_dir, max_steps))
    process.start()
    process.join()
    return process.exitcode


def run_with_kills(method: str, output_dir: str, kills: int, max_steps: int, seed: int, run_seconds: float) -> dict:
    """Restart the run until it finishes, killing it `kills` times first. Returns the kill log."""
    rng, context, log = random.Random(seed), multiprocessing.get_context("fork"), []
    while True:
        process = context.Process(target=train, args=(method, output_dir, max_steps))
        process.start()
        if len(log) < kills:
            mode = MODES[len(log) % len(MODES)]
            steps = rng.randint(0, 3) if mode == "random" else 0  # 0: during start-up or the first step
            delay = {"writing": rng.uniform(0, 0.02), "published": rng.uniform(0, 0.005),
                     "random": rng.uniform(0, 0.3 if steps == 0 else 0.05)}[mode]  # fmt: skip
            if kill_when(process, mode, delay, output_dir, timeout=20 * run_seconds + 60, steps=steps):
                log.append({"mode": mode, "steps": steps, "delay_ms": round(1000 * delay, 1),
                            "checkpoints": sorted(name for name in entries(output_dir) if "checkpoint-" in name)})  # fmt: skip
                continue
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"{method}: a restart failed (exit code {process.exitcode}) after kills {log}")
        return {"kills": log}  # finished (after fewer kills than asked when it outran them: reported)


def load(path: Path):
    if path.suffix == ".json":
        state = json.loads(path.read_text())
        history = [{k: v for k, v in entry.items() if not k.startswith("train_") and k != "total_flos"}
                   for entry in state["log_history"]]  # fmt: skip
        return {"global_step": state["global_step"], "log_history": history}
    if path.suffix == ".safetensors":
        return path.read_bytes()
    from transformers.trainer_pt_utils import safe_globals  # the numpy types of Trainer's RNG states

    with safe_globals():
        return torch.load(path, weights_only=True)


def equal(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if hasattr(a, "__array__") and not isinstance(a, (str, bytes)):
        import numpy as np

        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def compare(reference: str, interrupted: str, max_steps: int) -> list[str]:
    """The files of the last checkpoint (and, for a recipe, the final model) that differ."""
    last = f"checkpoint-{max_steps}"
    files = sorted(p.name for p in (Path(reference) / last).iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".json")
                   and p.name != "config.json" and not p.name.startswith("tokenizer") and p.name != "special_tokens_map.json")
    files = [f"{last}/{name}" for name in files]
    if (Path(reference) / "model.safetensors").exists():
        files += ["model.safetensors", "tokenizer.json"]
    differing = []
    for name in files:
        a, b = Path(reference) / name, Path(interrupted) / name
        if not b.exists() or not equal(load(a) if a.suffix != ".json" or "tokenizer" not in name else a.read_bytes(),
                                       load(b) if b.suffix != ".json" or "tokenizer" not in name else b.read_bytes()):
            differing.append(name)
    return differing


def check_method(method: str, kills: int, seed: int, workdir: str, max_steps: int = STEPS) -> dict:
    """Run `method` straight and with `kills` kills; returns what the JSON line reports."""
    reference, interrupted = os.path.join(workdir, f"{method}-straight"), os.path.join(workdir, f"{method}-killed")
    for folder in (reference, interrupted):
        shutil.rmtree(folder, ignore_errors=True)
    preload()
    os.makedirs(workdir, exist_ok=True)
    text_file(workdir)
    started = time.monotonic()
    if run_once(method, reference, max_steps) != 0:
        raise RuntimeError(f"{method}: the uninterrupted run failed")
    run_seconds = time.monotonic() - started
    report = run_with_kills(method, interrupted, kills, max_steps, seed, run_seconds)
    delivered = len(report["kills"])
    leftovers = sorted(name for name in entries(interrupted) if "checkpoint-" in name and not os.path.isfile(
        os.path.join(interrupted, name, "trainer_state.json")) and not name.startswith("staging/"))
    return {"method": method, "seed": seed, "kills": delivered,
            "differing": compare(reference, interrupted, max_steps), "incomplete_visible": leftovers,
            "straight_seconds": round(run_seconds, 2), "log": report["kills"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="all", help=f"one of {METHODS} or 'all'")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_steps", type=int, default=None, help="default: enough for the kills (>= 24)")
    parser.add_argument("--workdir", default=None)
    options = parser.parse_args()
    methods = METHODS if options.method == "all" else (options.method,)
    max_steps = options.max_steps or max(STEPS, 8 * (options.kills // len(MODES) + 2))  # room for every kill
    workdir = options.workdir or tempfile.mkdtemp(prefix="hfssl-faults-")
    for method in methods:
        result = check_method(method, options.kills, options.seed, workdir, max_steps)
        result.pop("log")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

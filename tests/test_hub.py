"""hfssl.export's model card and Hub push, and SafeTrainer's (create_model_card, push_to_hub, the repository made
before training), with the Hub intercepted at HfApi.

`HfApi.create_repo` / `HfApi.upload_folder` are replaced by functions that copy what would be uploaded into a local
"hub" folder; an offline Hub cache built from it lets timm ("hf-hub:<repo>") and transformers (a repo id) load the
pushed encoders in a process without hfssl, by running the usage snippet of the pushed model card.
"""

import copy
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl
from huggingface_hub.utils import filter_repo_objects
from PIL import Image
from transformers import AutoModel

from conftest import TINY_HEAD, TINY_VIT
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.export import push_backbone_to_hub, push_folder_to_hub, save_backbone, training_curve, write_model_card
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import MoCoTrainer, SimCLRTrainer, SSLTrainingArguments

MOCO_REPO, SIMCLR_REPO = "me/moco-digits", "me/simclr-vit-digits"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# Runs the encoder snippet of each pushed card in a fresh interpreter, reading the offline Hub cache only.
RUN_SNIPPETS = r"""
import json, sys
results = {}
for name, snippet in json.loads(sys.argv[1]).items():
    namespace = {}
    exec(snippet, namespace)
    results[name] = namespace["features"].tolist()
results["hfssl_imported"] = any(name == "hfssl" or name.startswith("hfssl.") for name in sys.modules)
print(json.dumps(results))
"""


class FakeHub:
    """Stands in for the Hub behind `HfApi`: `create_repo` records the call, `upload_folder` copies the files that
    would be uploaded (after `ignore_patterns`) into `root/<repo_id>`."""

    def __init__(self, root: Path) -> None:
        self.root, self.created, self.commits = root, [], []

    def create_repo(self, api, repo_id, *, private=None, exist_ok=False, **kwargs):
        self.created.append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok})
        return RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'me/' + repo_id}")  # the owner filled in

    def upload_folder(self, api, *, repo_id, folder_path, commit_message=None, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]
        for relative in filter_repo_objects(files, ignore_patterns=ignore_patterns):
            target = self.root / repo_id / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / relative, target)
        self.commits.append({"repo_id": repo_id, "message": commit_message})
        url = f"https://huggingface.co/{repo_id}/commit/{len(self.commits):040x}"
        return CommitInfo(commit_url=url, commit_message=commit_message or "", commit_description="",
                          oid=f"{len(self.commits):040x}")

    def patch(self, monkeypatch) -> None:
        hub = self
        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kwargs: hub.create_repo(api, repo_id, **kwargs))
        monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kwargs: hub.upload_folder(api, **kwargs))

    def offline_cache(self, cache: Path) -> Path:
        """A Hub cache (refs/main -> snapshots/<commit>) holding every pushed repo, for HF_HUB_OFFLINE loading."""
        for repo in {commit["repo_id"] for commit in self.commits}:
            revision = "0" * 40
            entry = cache / f"models--{repo.replace('/', '--')}"
            (entry / "refs").mkdir(parents=True, exist_ok=True)
            (entry / "refs" / "main").write_text(revision)
            shutil.copytree(self.root / repo, entry / "snapshots" / revision, dirs_exist_ok=True)
        return cache


def arguments(output_dir, **overrides):
    values = {"output_dir": str(output_dir), "max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
              "report_to": "none", "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "seed": 0}
    return SSLTrainingArguments(**{**values, **overrides})


def collator():
    return DataCollatorForMultiView.moco_v2(image_size=16, seed=0)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, digits):
    """MoCo v2 (timm resnet18) and SimCLR (tiny ViT), 3 steps each on digits at 16 px, pushed to the fake Hub: MoCo
    the recipes' way (save_backbone, trainer.create_model_card, push_folder_to_hub), SimCLR with push_backbone_to_hub."""
    root = tmp_path_factory.mktemp("hub")
    hub = FakeHub(root / "uploaded")
    torch.manual_seed(0)
    moco = MoCoTrainer(model=MoCoModel(MoCoConfig(backbone_name="resnet18", queue_size=16, **TINY_HEAD)),
                       args=arguments(root / "moco"), data_collator=collator(), train_dataset=digits)
    simclr = SimCLRTrainer(model=SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD)),
                           args=arguments(root / "simclr"), data_collator=collator(), train_dataset=digits)
    for trainer in (moco, simclr):
        trainer.train()
        trainer.model.eval()
    with pytest.MonkeyPatch.context() as monkeypatch:
        hub.patch(monkeypatch)
        export = save_backbone(moco.model, root / "moco" / "export", image_size=16)
        moco.create_model_card(folder=export, method="MoCo v2", dataset="32 digits", repo_id=MOCO_REPO,
                               metrics={"kNN top-1 (k=200, T=0.1)": 0.5}, encoder="backbone", license="apache-2.0")
        (export / "checkpoint-3").mkdir()  # ignored by push_folder_to_hub
        (export / "checkpoint-3" / "optimizer.pt").write_bytes(b"")
        moco_url = push_folder_to_hub(export, MOCO_REPO, private=True)
        card = write_model_card(root / "simclr", simclr, method="SimCLR", dataset="32 digits", repo_id=SIMCLR_REPO,
                                encoder="backbone")
        simclr_url = push_backbone_to_hub(simclr.model, SIMCLR_REPO, model_card=card, image_size=16)
    return {"hub": hub, "root": root, "moco": moco, "simclr": simclr, "urls": (moco_url, simclr_url)}


def code_blocks(readme: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme, re.DOTALL)


def test_push_goes_through_hf_api_with_one_commit_per_repo(pushed):
    hub = pushed["hub"]
    assert [entry["repo_id"] for entry in hub.created] == [MOCO_REPO, SIMCLR_REPO]
    assert hub.created[0]["private"] is True and all(entry["exist_ok"] for entry in hub.created)
    assert [commit["repo_id"] for commit in hub.commits] == [MOCO_REPO, SIMCLR_REPO]
    assert pushed["urls"][0].startswith(f"https://huggingface.co/{MOCO_REPO}/commit/")
    moco_files = sorted(p.relative_to(hub.root / MOCO_REPO).as_posix() for p in (hub.root / MOCO_REPO).rglob("*")
                        if p.is_file())
    assert moco_files == ["README.md", "config.json", "model.safetensors", "ssl_model/config.json",
                          "ssl_model/model.safetensors"]
    simclr_files = {p.name for p in (hub.root / SIMCLR_REPO).iterdir()}
    assert simclr_files == {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "ssl_model"}


def test_card_metadata_and_content(pushed):
    trainer, readme = pushed["moco"], (pushed["hub"].root / MOCO_REPO / "README.md").read_text()
    prose = " ".join(readme.split())
    data = ModelCard.load(pushed["hub"].root / MOCO_REPO / "README.md").data.to_dict()
    assert data["library_name"] == "timm" and data["pipeline_tag"] == "image-feature-extraction"
    assert data["license"] == "apache-2.0"
    assert {"hfssl", "self-supervised", "moco"} <= set(data["tags"])
    assert ModelCard.load(pushed["hub"].root / SIMCLR_REPO / "README.md").data.library_name == "transformers"
    assert "MoCo v2" in prose and "`resnet18`" in prose and "32 digits" in prose
    assert "3 x 16 x 16 image to a 512-dimensional feature vector" in prose
    hardware = "CPU" if trainer.args.device.type == "cpu" else torch.cuda.get_device_name(0)  # where the Trainer ran
    assert "3 optimizer steps in" in prose and hardware in prose and "1 process" in prose
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and f"Final training loss: {losses[-1]:.4g}" in prose
    assert "| kNN top-1 (k=200, T=0.1) | 0.5 |" in readme
    for row in ("| backbone | resnet18 |", "| queue_size | 16 |", "| temperature | 0.2 |", "| variant | v2 |", "| learning_rate | 0.001 |",
                "| global_batch_size | 8 |", "| optimizer | adamw_torch"):
        assert row in readme, row
    assert f"from {losses[0]:.4g} (step 1) to {losses[-1]:.4g} (step 3), over 3 logged points" in prose
    assert "backbone_name" not in readme and "github.com" not in readme  # no duplicate row, no undeclared URL
    assert "| step | loss | learning_rate | contrastive/positive_cosine |" in readme
    assert re.search(r"^\| 3 \| ", readme, re.MULTILINE)
    encoder, full = code_blocks(readme)
    assert f'timm.create_model("hf-hub:{MOCO_REPO}", pretrained=True)' in encoder and "hfssl" not in encoder
    assert f'AutoModel.from_pretrained("{MOCO_REPO}", subfolder="ssl_model")' in full
    assert "teacher_backbone" in readme and "queue" in readme


def test_training_curve_keeps_first_and_last_of_many_points():
    history = [{"loss": 10.0 - step / 10, "step": step, "learning_rate": 0.1} for step in range(1, 101)]
    summary, columns, rows = training_curve(history + [{"train_runtime": 1.0, "step": 100}], max_rows=5)
    assert columns == ["step", "loss", "learning_rate"]
    # rows at the evenly spaced indices round(i * 99 / 4) = 0, 25, 50, 74, 99 of the 100 logged points
    assert [row[0] for row in rows] == [1, 26, 51, 75, 100]
    # the means of the first and last tenth: 10 - 5.5 / 10 and 10 - 95.5 / 10
    assert summary == "The mean training loss fell from 9.45 (step 1-10) to 0.45 (step 91-100), over 100 logged points."
    assert training_curve([{"train_runtime": 1.0}])[0].startswith("No training loss was logged")


def test_training_curve_summary_compares_tenths_not_a_lucky_first_point():
    """A loss that dips once at step 2 and then climbs rose over the run; the old summary reported "lowest 0.1 at step
    2" and the first and last points only."""
    history = [{"loss": 0.1 if step == 2 else 1.0 + step / 100, "step": step} for step in range(1, 41)]
    summary = training_curve(history)[0]
    assert summary.startswith("The mean training loss rose from 0.795 (step 1-4) to 1.385 (step 37-40)")
    assert "lowest" not in summary


def test_card_snippets_load_the_pushed_encoders_from_the_hub_without_hfssl(pushed):
    hub, root = pushed["hub"], pushed["root"]
    cache = hub.offline_cache(root / "hf_cache")
    workdir = root / "user"
    workdir.mkdir()
    array = np.array(pushed["moco"].train_dataset[0]["image"].convert("RGB"))
    Image.fromarray(array).save(workdir / "image.png")
    snippets = {name: code_blocks((hub.root / repo / "README.md").read_text())[0]
                for name, repo in (("moco", MOCO_REPO), ("simclr", SIMCLR_REPO))}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", RUN_SNIPPETS, json.dumps(snippets)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["hfssl_imported"] is False
    pixels = torch.from_numpy(array).permute(2, 0, 1).float().unsqueeze(0) / 255
    for name in ("moco", "simclr"):
        backbone = copy.deepcopy(pushed[name].model.backbone).cpu()  # the snippets ran on CPU
        mean, std = (torch.tensor(backbone.data_config[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
        with torch.no_grad():
            expected = backbone((pixels - mean) / std)
        torch.testing.assert_close(torch.tensor(measured[name]), expected, atol=1e-4, rtol=1e-4)


def test_training_resumes_from_the_pushed_full_model(pushed, digits):
    """The full MoCo model read back from the pushed repo (teacher, queue and pointer included) trains on exactly
    like the model that was pushed."""
    original = pushed["moco"].model
    loaded = AutoModel.from_pretrained(pushed["hub"].root / MOCO_REPO, subfolder="ssl_model")
    assert type(loaded) is MoCoModel
    before = {name: tensor.cpu() for name, tensor in original.state_dict().items()}  # the Trainer may have used a GPU
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0, msg=name)
    continued = {}
    for name, model in (("original", copy.deepcopy(original)), ("loaded", loaded)):
        args = arguments(pushed["root"] / f"resume_{name}", max_steps=2, use_cpu=True)  # cuDNN's backward is not bitwise repeatable
        MoCoTrainer(model=model.train(), args=args, data_collator=collator(), train_dataset=digits).train()
        continued[name] = {key: tensor.cpu() for key, tensor in model.state_dict().items()}
    for name, tensor in continued["loaded"].items():
        torch.testing.assert_close(tensor, continued["original"][name], msg=name)
    assert not torch.equal(continued["loaded"]["queue"], before["queue"])
    assert not torch.equal(continued["loaded"]["teacher_projector.layers.0.weight"],
                           before["teacher_projector.layers.0.weight"])


def test_card_written_before_a_push_names_no_local_path(pushed, tmp_path):
    """Not pushed: the usage code names the folder by its name (no absolute path), one sentence says how to load it
    after an upload, the license field is there, and a local dataset is named by its folder name."""
    images = tmp_path / "my_images"
    images.mkdir()
    write_model_card(tmp_path / "export", pushed["moco"], method="MoCo v2", dataset=str(images), encoder="backbone")
    readme = (tmp_path / "export" / "README.md").read_text()
    assert str(tmp_path) not in readme and "the local data `my_images`" in readme
    assert 'timm.create_model("local-dir:export", pretrained=True)' in readme
    assert 'AutoModel.from_pretrained("export", subfolder="ssl_model")' in readme
    assert "`export` in the code stands for the path to this folder" in readme and "hf upload <repo_id> export" in readme
    assert ModelCard.load(tmp_path / "export" / "README.md").data.license == "other"
    assert "The full MoCo v2 model is in `ssl_model/`; it needs hfssl." in " ".join(readme.split())


def test_plain_model_card_drops_trainer_speed_figures(pushed, tmp_path):
    metrics = {"eval_loss": 1.25, "eval_runtime": 3.2, "eval_samples_per_second": 80.0, "eval_steps_per_second": 5.0,
               "train_runtime": 9.0, "train_samples_per_second": 7.0, "total_flos": 1e9}
    write_model_card(tmp_path, pushed["moco"], method="Masked language modelling", metrics=metrics, repo_id="me/mlm",
                     usage='from transformers import pipeline\nfill = pipeline("fill-mask", model="{path}")')
    readme = (tmp_path / "README.md").read_text()
    assert "| eval_loss | 1.25 |" in readme
    assert not any(name in readme for name in ("_runtime", "per_second", "total_flos"))
    assert 'pipeline("fill-mask", model="me/mlm")' in readme and "Not uploaded" not in readme


def refuse_connection(api, repo_id, **kwargs):
    raise ConnectionError("[Errno -3] Temporary failure in name resolution")


def test_push_to_hub_without_hub_access_fails_at_init_with_the_way_to_upload_later(tmp_path, monkeypatch, digits):
    monkeypatch.setattr(HfApi, "create_repo", refuse_connection)
    args = arguments(tmp_path / "run", push_to_hub=True, hub_model_id="me/offline")
    with pytest.raises(RuntimeError, match=r"cannot create the Hub repository 'me/offline' \(ConnectionError.*"
                                           r"hf upload me/offline .*run"):
        SimCLRTrainer(model=SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD)), args=args,
                      data_collator=collator(), train_dataset=digits)


def test_recipe_push_without_hub_access_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(HfApi, "create_repo", refuse_connection)
    with pytest.raises(RuntimeError, match="hf upload me/recipe"):
        run_recipe("pretrain_ssl", ["--method", "simclr", "--output_dir", str(tmp_path / "run"), "--push_to_hub",
                                    "--hub_model_id", "me/recipe", "--max_train_samples", "16", "--max_steps", "2",
                                    "--report_to", "none"], monkeypatch)
    assert not (tmp_path / "run" / "export").exists() and not list((tmp_path / "run").glob("checkpoint-*"))


def test_trainer_pushes_its_folder_once_with_the_hfssl_card(tmp_path, monkeypatch, digits):
    """The repository is created at init; no upload per checkpoint or at save_model; push_to_hub uploads the folder
    once, with hfssl's card (not Trainer's) and without checkpoints."""
    hub = FakeHub(tmp_path / "uploaded")
    hub.patch(monkeypatch)
    args = arguments(tmp_path / "run", max_steps=2, push_to_hub=True, hub_model_id="me/plain", save_strategy="steps",
                     save_steps=1)
    trainer = SimCLRTrainer(model=SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD)), args=args,
                            data_collator=collator(), train_dataset=digits)
    assert [entry["repo_id"] for entry in hub.created] == ["me/plain"] and not hub.commits
    trainer.train()
    trainer.save_model()
    assert not hub.commits
    url = trainer.push_to_hub(method="SimCLR", dataset="32 digits")
    assert len(hub.commits) == 1 and url.startswith("https://huggingface.co/me/plain/commit/")
    pushed_files = {path.name for path in (hub.root / "me/plain").iterdir()}
    assert {"README.md", "config.json", "model.safetensors"} <= pushed_files
    assert not any(name.startswith(("checkpoint-", ".")) for name in pushed_files)
    readme = (hub.root / "me/plain" / "README.md").read_text()
    assert "SimCLR pretraining of a `SimCLRModel` with hfssl, on 32 digits." in readme
    assert 'AutoModel.from_pretrained("me/plain")' in readme and "### Training curve" in readme


def test_push_to_hub_rewrites_a_card_written_before_the_repository_existed(pushed, tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "uploaded")
    hub.patch(monkeypatch)
    trainer = copy.copy(pushed["moco"])  # args.push_to_hub is False: no repository yet
    folder = save_backbone(trainer.model, tmp_path / "export", image_size=16)
    trainer.create_model_card(folder=folder, method="MoCo v2", dataset="32 digits", encoder="backbone")
    assert "Not uploaded" in (folder / "README.md").read_text()
    trainer.push_to_hub()
    repo = hub.commits[0]["repo_id"]
    assert repo == "me/moco"  # the output folder's name, with the owner the Hub fills in
    readme = (hub.root / repo / "README.md").read_text()
    assert f'timm.create_model("hf-hub:{repo}", pretrained=True)' in readme and "Not uploaded" not in readme
    assert len(hub.commits) == 1 and (hub.root / repo / "ssl_model" / "config.json").is_file()


def run_recipe(recipe, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(RECIPES / f"{recipe}.py"), *argv])
    runpy.run_path(str(RECIPES / f"{recipe}.py"), run_name="__main__")


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_recipe_pushes_encoder_card_and_full_model(method, tmp_path, monkeypatch, capsys):
    hub = FakeHub(tmp_path / "uploaded")
    hub.patch(monkeypatch)
    run_recipe("pretrain_ssl", [
        "--method", method, "--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--per_device_train_batch_size", "16",
        "--image_size", "16", "--projection_hidden_dim", "32", "--max_train_samples", "64", "--logging_steps", "1",
        "--report_to", "none", "--disable_tqdm", "true", "--push_to_hub", "--hub_model_id", "me/recipe",
    ], monkeypatch)
    assert "Pushed: https://huggingface.co/me/recipe/commit/" in capsys.readouterr().out
    repo = hub.root / "me/recipe"
    # the repository is created at the trainer's init (before training), then the export is uploaded in one commit
    assert hub.created and all(entry == {"repo_id": "me/recipe", "private": None, "exist_ok": True} for entry in hub.created)
    assert len(hub.commits) == 1
    readme = (repo / "README.md").read_text()
    title, model_class = ("SimCLR", SimCLRModel) if method == "simclr" else ("MoCo v2", MoCoModel)
    assert title in readme and "kNN top-1 (k=200, T=0.1)" in readme and "hfssl's built-in digits" in readme
    assert 'timm.create_model("hf-hub:me/recipe", pretrained=True)' in readme
    assert json.loads((repo / "config.json").read_text())["architecture"] == "resnet18"
    ssl_model = AutoModel.from_pretrained(repo, subfolder="ssl_model")
    assert type(ssl_model) is model_class
    import timm

    encoder = timm.create_model(f"local-dir:{repo}", pretrained=True).eval()
    pixel_values = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixel_values), ssl_model.eval().backbone(pixel_values))


def test_recipe_refuses_to_push_an_encoder_timm_cannot_rebuild_before_training(tmp_path, monkeypatch):
    FakeHub(tmp_path / "uploaded").patch(monkeypatch)
    with pytest.raises(ValueError, match="cannot rebuild it"):
        run_recipe("pretrain_ssl", ["--method", "moco", "--output_dir", str(tmp_path / "run"), "--small_image_stem",
                                    "--push_to_hub", "--max_train_samples", "16", "--report_to", "none"], monkeypatch)
    assert not (tmp_path / "run").exists()


TEXT_TINY = ["--vocab_size", "400", "--max_train_samples", "300", "--max_steps", "2",
             "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--report_to", "none",
             "--disable_tqdm", "true", "--push_to_hub", "--hub_model_id", "me/recipe"]
PUSHING_RECIPES = {
    # recipe: (extra arguments, pushed subfolder or "", Hub task in the card, transformers loader of the push)
    "pretrain_mlm": (["--preset", "tiny", "--max_seq_length", "32", *TEXT_TINY], "fill-mask", "AutoModelForMaskedLM"),
    "pretrain_simcse": (["--max_seq_length", "16", *TEXT_TINY], "sentence-similarity", "AutoModel"),
    "pretrain_mae": (["--max_train_samples", "32", "--max_steps", "2", "--per_device_train_batch_size", "8",
                      "--report_to", "none", "--disable_tqdm", "true", "--num_reconstructions", "2",
                      "--push_to_hub", "--hub_model_id", "me/recipe"], "image-feature-extraction", "AutoModel"),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(PUSHING_RECIPES))
def test_other_recipes_push_their_model_and_card_once(recipe, tmp_path, monkeypatch):
    import transformers

    hub = FakeHub(tmp_path / "uploaded")
    hub.patch(monkeypatch)
    argv, task, loader = PUSHING_RECIPES[recipe]
    run_recipe(recipe, ["--output_dir", str(tmp_path / "run"), *argv], monkeypatch)
    assert len(hub.commits) == 1 and hub.created[0]["repo_id"] == "me/recipe"  # no upload per checkpoint or save
    repo = hub.root / "me/recipe"
    readme = (repo / "README.md").read_text()
    assert f"pipeline_tag: {task}" in readme and "license: other" in readme and "- hfssl" in readme
    assert "### Training curve" in readme and "optimizer steps in" in readme and "| train_loss |" in readme
    assert str(tmp_path) not in readme and "_runtime" not in readme and "me/recipe" in readme
    assert (repo / "model.safetensors").exists()
    getattr(transformers, loader).from_pretrained(repo)
    if recipe == "pretrain_simcse":  # sentence-transformers reads the pushed repo with [CLS] pooling
        assert json.loads((repo / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True
    if recipe == "pretrain_mae":  # its pooler is the identity on [CLS], not a random one
        assert json.loads((repo / "config.json").read_text())["pooler_act"] == "linear"

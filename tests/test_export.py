"""hfssl.export: the encoder in its library's own format, loaded by timm / transformers in a process without hfssl."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTMAEModel,
    ViTModel,
)

from conftest import TINY_HEAD, tiny_vit_config
from hfssl.export import (
    mae_encoder_as_vit,
    native_export_problem,
    resolve_backbone,
    save_backbone,
    save_sentence_encoder,
)
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.models.simcse import SimCSEModel

VIT_32 = tiny_vit_config(image_size=32).to_dict()  # the tiny ViT at 32 px
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

# Runs in a fresh interpreter: only timm and transformers load the exports; hfssl must never be imported.
LOAD_WITHOUT_HFSSL = r"""
import json, sys
import timm, torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

vit_dir, timm_dir, tensors_file = sys.argv[1:4]
tensors = load_file(tensors_file)
results = {}
with torch.no_grad():
    vit = AutoModel.from_pretrained(vit_dir).eval()
    cls = vit(pixel_values=tensors["vit_input"]).last_hidden_state[:, 0]
    results["vit_max_diff"] = (cls - tensors["vit_features"]).abs().max().item()
    processor = AutoImageProcessor.from_pretrained(vit_dir)
    results["vit_processor"] = [type(processor).__name__, dict(processor.size), list(processor.image_mean)]

    resnet = timm.create_model("local-dir:" + timm_dir, pretrained=True).eval()
    results["timm_max_diff"] = (resnet(tensors["timm_input"]) - tensors["timm_features"]).abs().max().item()
    results["timm_data_config"] = timm.data.resolve_data_config({}, model=resnet)
    finetune = timm.create_model("local-dir:" + timm_dir, pretrained=True, num_classes=7).eval()
    results["finetune_logits_shape"] = list(finetune(tensors["timm_input"]).shape)
    pre_logits = finetune.forward_head(finetune.forward_features(tensors["timm_input"]), pre_logits=True)
    results["finetune_max_diff"] = (pre_logits - tensors["timm_features"]).abs().max().item()
    wrapped = AutoModel.from_pretrained(timm_dir).eval()  # transformers' timm wrapper reads timm's layout too
    pooled = wrapped(pixel_values=tensors["timm_input"]).pooler_output
    results["timm_wrapper_max_diff"] = (pooled - tensors["timm_features"]).abs().max().item()
results["hfssl_imported"] = any(name == "hfssl" or name.startswith("hfssl.") for name in sys.modules)
print(json.dumps(results))
"""


def perturb(model: torch.nn.Module) -> None:
    """Move every weight and batch-norm statistic away from its initialisation, as training would."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator)
                tensor.copy_(tensor + 0.05 * noise if "running_var" not in name else 0.5 + noise.abs())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A SimCLR model with a tiny ViT and a MoCo v2 model with a timm resnet18, both perturbed as if trained, exported;
    then loaded in a subprocess without hfssl. Returns (folders, models, the subprocess's measurements)."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    simclr = SimCLRModel(SimCLRConfig(backbone_model_config=VIT_32, **TINY_HEAD)).eval()
    moco = MoCoModel(MoCoConfig(backbone_name="resnet18", queue_size=16, **TINY_HEAD)).eval()
    perturb(simclr)
    perturb(moco)
    vit_dir = save_backbone(simclr, root / "vit")
    timm_dir = save_backbone(moco, root / "resnet18", image_size=16)
    tensors = {"vit_input": torch.randn(2, 3, 32, 32), "timm_input": torch.randn(2, 3, 16, 16)}
    with torch.no_grad():
        tensors["vit_features"] = simclr.backbone(tensors["vit_input"])
        tensors["timm_features"] = moco.backbone(tensors["timm_input"])
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, root / "tensors.safetensors")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_HFSSL, str(vit_dir), str(timm_dir), str(root / "tensors.safetensors")],
        cwd=root, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {"vit": vit_dir, "timm": timm_dir}, {"simclr": simclr, "moco": moco}, measured


def test_exports_load_without_hfssl(exported):
    _, _, measured = exported
    assert measured["hfssl_imported"] is False


def test_transformers_export_gives_the_trained_features_and_processor(exported):
    folders, _, measured = exported
    assert sorted(path.name for path in folders["vit"].iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json", "ssl_model"]
    assert json.loads((folders["vit"] / "config.json").read_text())["model_type"] == "vit"
    assert measured["vit_max_diff"] < 1e-5
    name, size, mean = measured["vit_processor"]
    assert name.startswith("ViTImageProcessor") and size == {"height": 32, "width": 32}
    assert mean == pytest.approx([0.485, 0.456, 0.406])


def test_timm_export_gives_the_trained_features_and_takes_a_new_head(exported):
    folders, _, measured = exported
    config = json.loads((folders["timm"] / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 0
    assert config["pretrained_cfg"]["input_size"] == [3, 16, 16] and "tag" not in config["pretrained_cfg"]
    assert not (folders["timm"] / "pytorch_model.bin").exists()
    assert measured["timm_max_diff"] < 1e-5 and measured["timm_wrapper_max_diff"] < 1e-5
    assert measured["timm_data_config"]["input_size"] == [3, 16, 16]
    assert measured["timm_data_config"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert measured["finetune_logits_shape"] == [2, 7] and measured["finetune_max_diff"] < 1e-5


def test_full_model_in_the_subfolder_keeps_teacher_and_queue(exported):
    folders, models, _ = exported
    config = json.loads((folders["timm"] / "ssl_model" / "config.json").read_text())
    assert config["model_type"] == "hfssl_moco" and "auto_map" not in config  # no trust_remote_code involved
    assert (folders["timm"] / "ssl_model" / "model.safetensors").exists()
    loaded = AutoModel.from_pretrained(folders["timm"], subfolder="ssl_model")
    assert type(loaded).__name__ == "MoCoModel"
    original = models["moco"].state_dict()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)
    assert {"teacher_backbone.model.conv1.weight", "queue", "queue_pointer"} <= set(original)


def test_small_image_stem_is_refused_and_nothing_is_written(tmp_path):
    model = SimCLRModel(SimCLRConfig(backbone_name="resnet18", small_image_stem=True, **TINY_HEAD))
    problem = native_export_problem(model.backbone)
    assert "small_image_stem" in problem and "kernel_size=(3, 3), stride=(1, 1)" in problem
    with pytest.raises(ValueError, match="cannot rebuild it"):
        save_backbone(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert native_export_problem(SimCLRModel(SimCLRConfig(backbone_name="resnet18", **TINY_HEAD)).backbone) is None


def test_export_errors_say_what_to_pass(tmp_path):
    with pytest.raises(TypeError, match="expected an hfssl `Backbone`"):
        resolve_backbone(torch.nn.Linear(2, 2))
    model = MoCoModel(MoCoConfig(backbone_name="resnet18", queue_size=16, **TINY_HEAD))
    with pytest.raises(ValueError, match="a timm export keeps its preprocessing in pretrained_cfg"):
        save_backbone(model, tmp_path / "a", processor=object())
    with pytest.raises(ValueError, match=r"takes 3 input channel\(s\).*pass `mean` and `std` with 3"):
        save_backbone(model, tmp_path / "b", mean=(0.5,), std=(0.5,))
    teacher = save_backbone(model, tmp_path / "teacher", encoder="teacher_backbone", ssl_model_subfolder=None)
    assert sorted(path.name for path in teacher.iterdir()) == ["config.json", "model.safetensors"]


def tiny_simcse(vocab_size: int) -> SimCSEModel:
    """A one-layer BERT of width 32 in a SimCSEModel, its weights moved from their initialisation."""
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64))
    model = SimCSEModel.from_encoder(encoder).eval()
    perturb(model)
    return model


SENTENCES = ["a short one", "numbers 1 2 3",
             "the sentence encoder maps every sentence of this rather long line, cut at sixteen tokens, to one vector"]


def test_sentence_encoder_export_is_the_cls_state_with_sentence_transformers_cls_pooling(tmp_path, wordpiece_tokenizer):
    model = tiny_simcse(len(wordpiece_tokenizer))
    folder = save_sentence_encoder(model, wordpiece_tokenizer, tmp_path / "export", max_seq_length=16)
    assert {"config.json", "model.safetensors", "tokenizer.json", "modules.json", "sentence_bert_config.json",
            "config_sentence_transformers.json", "1_Pooling", "ssl_model"} <= {path.name for path in folder.iterdir()}
    modules = json.loads((folder / "modules.json").read_text())
    assert [(module["path"], module["type"]) for module in modules] == [
        ("", "sentence_transformers.models.Transformer"), ("1_Pooling", "sentence_transformers.models.Pooling")]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 32 and pooling["pooling_mode_cls_token"] is True
    modes = {name: value for name, value in pooling.items() if name.startswith("pooling_mode_")}
    assert len(modes) == 6 and [name for name, value in modes.items() if value] == ["pooling_mode_cls_token"]
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 16
    encoder, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert isinstance(encoder, BertModel) and not info["missing_keys"] and not info["mismatched_keys"]  # no new pooler
    batch = wordpiece_tokenizer(SENTENCES, truncation=True, max_length=16, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 16  # the long sentence was cut
    with torch.no_grad():
        outputs, expected = encoder.eval()(**batch), model.encode(**batch)
        torch.testing.assert_close(outputs.last_hidden_state[:, 0], expected)
        torch.testing.assert_close(outputs.pooler_output, model.mlp(expected))  # the MLP, as in SimCSE's own exports
    loaded = AutoModel.from_pretrained(folder, subfolder="ssl_model")
    assert isinstance(loaded, SimCSEModel)
    with pytest.raises(ValueError, match="max_seq_length=0 must be >= 1"):
        save_sentence_encoder(model, wordpiece_tokenizer, tmp_path / "bad", max_seq_length=0)


def test_sentence_transformers_loads_the_export_with_cls_pooling(tmp_path, wordpiece_tokenizer):
    sentence_transformers = pytest.importorskip("sentence_transformers")  # optional: hfssl does not depend on it
    model = tiny_simcse(len(wordpiece_tokenizer))
    folder = save_sentence_encoder(model, wordpiece_tokenizer, tmp_path / "export", max_seq_length=16)
    loaded = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    assert loaded.max_seq_length == 16
    batch = wordpiece_tokenizer(SENTENCES, truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.encode(**batch)
    torch.testing.assert_close(loaded.encode(SENTENCES, convert_to_tensor=True).cpu(), expected)


def tiny_mae() -> ViTMAEForPreTraining:
    torch.manual_seed(0)
    config = ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                          decoder_num_attention_heads=2, decoder_intermediate_size=64, mask_ratio=0.75)
    model = ViTMAEForPreTraining(config).eval()
    perturb(model)
    return model


def test_mae_encoder_as_vit_is_deterministic_and_equal_to_the_mae_encoder_in_patch_order():
    model = tiny_mae()
    encoder = mae_encoder_as_vit(model).eval()
    assert isinstance(encoder, ViTModel) and encoder.config.hidden_size == 32 and encoder.config.pooler_act == "linear"
    weights = model.vit.state_dict()  # every weight copied, the fixed sin-cos position embeddings included
    assert all(torch.equal(value, weights[name]) for name, value in encoder.state_dict().items() if name in weights)
    reference_config = copy.deepcopy(model.config)
    reference_config.mask_ratio = 0.0
    reference = ViTMAEModel(reference_config).eval()
    reference.load_state_dict(weights)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        first, second = encoder(pixel_values=pixels), encoder(pixel_values=pixels)
        ordered = reference(pixel_values=pixels, noise=torch.arange(16.0).expand(3, 16))  # identity order
        shuffled = reference(pixel_values=pixels)  # ViTMAE's own random token order
    assert first.last_hidden_state.shape == (3, 1 + 16, 32) and first.pooler_output.shape == (3, 32)
    assert torch.equal(first.last_hidden_state, second.last_hidden_state)
    torch.testing.assert_close(first.last_hidden_state, ordered.last_hidden_state)
    assert not torch.allclose(shuffled.last_hidden_state[:, 1:], ordered.last_hidden_state[:, 1:])  # why not ViTMAE
    torch.testing.assert_close(first.pooler_output, first.last_hidden_state[:, 0], rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="takes a ViTMAEForPreTraining or ViTMAEModel, got ViTModel"):
        mae_encoder_as_vit(encoder)


def test_mae_export_loads_with_its_pooler_as_the_cls_token(tmp_path):
    from PIL import Image
    from transformers import ViTImageProcessor, pipeline

    encoder = mae_encoder_as_vit(tiny_mae())
    encoder.save_pretrained(tmp_path)
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    processor.save_pretrained(tmp_path)
    loaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, ViTModel) and not any(info[key] for key in ("missing_keys", "unexpected_keys",
                                                                           "mismatched_keys"))  # nothing new, at random
    generator = torch.Generator().manual_seed(0)
    images = [Image.fromarray(torch.randint(0, 256, (32, 32, 3), generator=generator, dtype=torch.uint8).numpy())
              for _ in range(2)]
    with torch.no_grad():
        outputs = loaded.eval()(**processor(images=images, return_tensors="pt"))
    torch.testing.assert_close(outputs.pooler_output, outputs.last_hidden_state[:, 0], rtol=0, atol=1e-6)
    extractor = pipeline("image-feature-extraction", model=str(tmp_path), pool=True)
    pooled = torch.tensor([extractor(image)[0] for image in images])
    torch.testing.assert_close(pooled, outputs.last_hidden_state[:, 0], rtol=1e-5, atol=1e-5)

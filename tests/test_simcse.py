"""Tests of SimCSEModel (unsupervised SimCSE) and recipes/pretrain_simcse.py."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, BertConfig, BertModel

from hfssl.models.simcse import SimCSEConfig, SimCSEModel

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def model():
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, hidden_dropout_prob=0.1))
    return SimCSEModel.from_encoder(encoder)


def naive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-pair reference: -log(exp(cos(z1_i, z2_i)/t) / sum_j exp(cos(z1_i, z2_j)/t)), averaged."""
    total = 0.0
    for i in range(len(z1)):
        logits = [F.cosine_similarity(z1[i], z2[j], dim=0) / temperature for j in range(len(z2))]
        total = total - (logits[i] - torch.logsumexp(torch.stack(logits), dim=0))
    return total / len(z1)


def test_loss_matches_the_per_pair_reference(model):
    ids = torch.randint(5, 100, (6, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    model.train()
    torch.manual_seed(5)
    output = model(ids, mask)
    torch.manual_seed(5)  # replay the same dropout masks
    z = model.mlp(model.encode(ids.repeat(2, 1), mask.repeat(2, 1)))
    assert torch.allclose(output.loss, naive_loss(z[:6], z[6:], 0.05), atol=1e-5)
    assert output.metrics["contrastive/positive_cosine"] < 1.0  # dropout made two different views
    model.eval()
    assert model(ids, mask).metrics["contrastive/positive_cosine"] == pytest.approx(1.0, abs=1e-5)


def test_every_trainable_parameter_moves_and_round_trips(model, tmp_path):
    ids = torch.randint(5, 100, (8, 12), generator=torch.Generator().manual_seed(2))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        loss = model(ids, torch.ones_like(ids)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(before[name], p.detach())]
    assert unchanged == []
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, SimCSEModel) and loaded.config.temperature == 0.05
    model.eval()
    loaded.eval()
    assert torch.allclose(loaded.encode(ids), model.encode(ids))


def test_bad_inputs_raise(model):
    with pytest.raises(ValueError, match="B >= 2 sentences"):
        model(torch.tensor([[5, 6, 7]]))
    with pytest.raises(ValueError, match="must be > 0"):
        SimCSEConfig(temperature=0.0)
    with pytest.raises(ValueError, match="encoder_config is required"):
        SimCSEModel(SimCSEConfig())


@pytest.mark.slow
def test_recipe_trains_and_saves(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from hfssl.evaluation import retrieval

    pairs, score = [], retrieval.pair_retrieval_scores  # the held-out (query, document) halves the recipe scores
    monkeypatch.setattr(retrieval, "pair_retrieval_scores",
                        lambda encode, queries, documents: pairs.append((queries, documents)) or score(encode, queries, documents))  # fmt: skip
    spec = importlib.util.spec_from_file_location("pretrain_simcse", RECIPES / "pretrain_simcse.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "pretrain_simcse", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["pretrain_simcse.py", "--output_dir", str(tmp_path), "--max_train_samples", "256",
                                      "--vocab_size", "400", "--per_device_train_batch_size", "32", "--max_steps", "4",
                                      "--validation_split_percentage", "1", "--report_to", "none", "--use_cpu", "true"])
    module.main()
    metrics = json.loads((tmp_path / "all_results.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and -1.0 <= metrics["anisotropy_after"] <= 1.0
    assert isinstance(AutoModel.from_pretrained(tmp_path), SimCSEModel)
    export = tmp_path / "export"  # the sentence encoder, for transformers and sentence-transformers
    assert isinstance(AutoModel.from_pretrained(export), BertModel)
    assert json.loads((export / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True
    assert json.loads((export / "sentence_bert_config.json").read_text())["max_seq_length"] == 32
    # 4 steps do not train: the [CLS] states stay nearly parallel (mean cosine 0.99999) and recall@1 is 0.14 after,
    # 0.12 before, over 65 pairs. No floor can fail there (pair_retrieval_scores counts ties in the query's favour:
    # a constant encoder scores 1.0), so the check that can fail is the figure itself: the exported encoder ([CLS]
    # state, sentences cut at 32 tokens) scores the same pairs the same (measured equal; the margin of one pair
    # covers a near-tie between such parallel states rounding differently).
    encoder, tokenizer = BertModel.from_pretrained(export).eval(), AutoTokenizer.from_pretrained(export)

    def encode(texts: list[str]) -> torch.Tensor:
        return encoder(**tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")).last_hidden_state[:, 0]

    queries, documents = pairs[-1]
    recomputed = score(encode, queries, documents)
    assert metrics["retrieval_pairs"] == len(queries) >= 2
    for name in ("recall@1", "recall@5"):
        assert metrics[f"{name}_after"] == pytest.approx(recomputed[name], abs=1.5 / len(queries))
    if importlib.util.find_spec("sentence_transformers") is not None:  # optional: hfssl does not depend on it
        from sentence_transformers import SentenceTransformer

        with torch.no_grad():
            expected = encode(queries[:8])
        loaded = SentenceTransformer(str(export), device="cpu")
        torch.testing.assert_close(loaded.encode(queries[:8], convert_to_tensor=True), expected)
    card = (export / "README.md").read_text()
    assert "sentence-similarity" in card and "[CLS] last hidden state" in card and "- sentence-transformers" in card
    assert "SentenceTransformer(\"export\")" in card and "max_length=32" in card


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2])  # 3 processes (uneven shards) of the same gather: tests/test_distributed.py
def test_processes_match_one_process_on_the_global_batch(tmp_path, processes):
    """Negatives gathered with gradients: N processes give the loss and gradients of one on the global batch."""
    import os
    import subprocess

    worker = Path(__file__).with_name("simcse_distributed_worker.py")
    out = tmp_path / "rank0.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU everywhere
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(processes), str(worker), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    distributed = torch.load(out, weights_only=True)
    sys.path.insert(0, str(worker.parent))
    try:
        from simcse_distributed_worker import one_step
    finally:
        sys.path.remove(str(worker.parent))
    loss, gradients = one_step(0, 1)
    assert torch.allclose(distributed["loss"], loss, atol=1e-5)
    assert set(distributed["gradients"]) == set(gradients) and len(gradients) > 5
    for name, gradient in gradients.items():
        assert gradient.abs().sum() > 0, name
        assert torch.allclose(distributed["gradients"][name], gradient, atol=1e-5), name


def test_supervised_triplets_match_a_per_pair_reference(wordpiece_tokenizer):
    """Supervised SimCSE: query i against positive i, the other positives and every hard negative."""
    from hfssl import DataCollatorForSentencePairs

    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(wordpiece_tokenizer), hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0))
    model = SimCSEModel.from_encoder(encoder, temperature=0.05)
    triplets = [{"text": f"the {w} statement", "positive": f"a {w} clause", "negative": f"no {w} here"}
                for w in ("for", "while", "if", "try")]
    batch = DataCollatorForSentencePairs(wordpiece_tokenizer)(triplets)
    assert set(batch) == {"input_ids", "attention_mask", "positive_input_ids", "positive_attention_mask",
                          "negative_input_ids", "negative_attention_mask"}
    loss = model(**batch).loss

    def embed(prefix):
        return F.normalize(model.mlp(model.encode(batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"])), dim=1)

    query, positive, negative = embed(""), embed("positive_"), embed("negative_")
    expected = 0.0
    for i in range(len(triplets)):
        logits = [query[i] @ positive[j] / 0.05 for j in range(len(triplets))]
        logits += [query[i] @ negative[j] / 0.05 for j in range(len(triplets))]
        expected = expected - torch.log_softmax(torch.stack(logits), 0)[i]
    assert torch.allclose(loss, expected / len(triplets), atol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad and p.dim() > 1)
    with pytest.raises(ValueError, match="need positive_input_ids"):
        model(input_ids=batch["input_ids"], negative_input_ids=batch["negative_input_ids"])

"""Unsupervised SimCSE sentence embeddings (Gao et al., 2021) with hfssl's SimCSEModel.

    accelerate launch recipes/pretrain_simcse.py                    # built-in corpus, tiny BERT, minutes on 2 CPUs
    accelerate launch --num_processes 8 recipes/pretrain_simcse.py --model_name_or_path bert-base-uncased \
        --train_file wiki1m_for_simcse.txt --learning_rate 3e-5 --per_device_train_batch_size 64 --max_seq_length 32

With no dataset named it trains on CPython's bundled documentation and stdlib docstrings (each paragraph one
"sentence", truncated to --max_seq_length). --model_name_or_path starts from a pretrained encoder (the paper:
BERT-base); otherwise a BERT of --preset size is trained from scratch with a WordPiece tokenizer trained on the text.
It scores retrieval on held-out pairs built offline (each held-out paragraph cut in two halves: find the other half
among all second halves; recall@1/@5 and MRR) before and after training, and the mean cosine between held-out
sentences (anisotropy, which SimCSE lowers). Sentence embedding = the encoder's [CLS] state, no MLP (the paper's
unsupervised setting). --output_dir holds the SimCSEModel (to resume); --output_dir/export the encoder, its tokenizer
and model card, loaded by `AutoModel` and by `sentence_transformers.SentenceTransformer` with [CLS] pooling
(`hfssl.export.save_sentence_encoder`), and the full SimCSEModel in export/ssl_model/.
"""

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import AutoModel, BertConfig, BertModel, DataCollatorWithPadding, TrainingArguments

from hfssl.data.text import TextDataArguments, train_wordpiece_tokenizer
from hfssl.distributed import end_processes
from hfssl.evaluation.retrieval import pair_retrieval_scores, split_into_halves
from hfssl.export import save_sentence_encoder
from hfssl.models.simcse import SimCSEModel
from hfssl.cli import parse_recipe_arguments
from hfssl.data.tokenizer_training import load_or_train_tokenizer
from hfssl.trainers.safe_trainer import SafeTrainer

logger = logging.getLogger(__name__)
USAGE = """from sentence_transformers import SentenceTransformer
embeddings = SentenceTransformer("{path}").encode(["a sentence", "another one"])  # [CLS] pooling

# or with transformers alone
from transformers import AutoModel, AutoTokenizer
tokenizer, encoder = AutoTokenizer.from_pretrained("{path}"), AutoModel.from_pretrained("{path}")
batch = tokenizer(["a sentence", "another one"], padding=True, truncation=True, max_length={max_seq_length},
                  return_tensors="pt")
embeddings = encoder(**batch).last_hidden_state[:, 0]  # [CLS] pooling, as in training"""

# Sizes from scratch: (hidden size, layers, heads), as recipes/pretrain_mlm.py.
PRESETS = {"tiny": (64, 2, 2), "mini": (256, 4, 4), "small": (512, 4, 8), "medium": (512, 8, 8), "base": (768, 12, 12)}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "Pretrained encoder (paper: BERT-base)."})
    preset: str = field(default="tiny", metadata={"help": f"Size from scratch: {', '.join(PRESETS)}."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer; else one is trained."})
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary of the trained tokenizer."})
    temperature: float = field(default=0.05, metadata={"help": "InfoNCE temperature (SimCSE: 0.05)."})


@dataclass
class DataArguments(TextDataArguments):
    max_seq_length: int = field(default=32, metadata={"help": "Sentences are truncated to this (SimCSE: 32)."})


@dataclass
class SimCSETrainingArguments(TrainingArguments):
    """SimCSE's unsupervised settings (batch 64, 1 epoch, 3e-5 for BERT-base; 1e-3 suits a tiny model from scratch)."""

    output_dir: str | None = field(default="outputs/pretrain_simcse")
    num_train_epochs: float = field(default=1.0)
    per_device_train_batch_size: int = field(default=64)
    learning_rate: float = field(default=1e-3)
    dataloader_drop_last: bool = field(default=True)
    logging_steps: float = field(default=50)
    save_strategy: str = field(default="no")


@torch.no_grad()
def mean_cosine(model: SimCSEModel, batch: dict[str, torch.Tensor]) -> float:
    """Mean cosine between the embeddings of different held-out sentences."""
    model.eval()
    device = next(model.parameters()).device  # the Trainer may have moved the model to a GPU
    embeddings = torch.nn.functional.normalize(model.encode(**{key: value.to(device) for key, value in batch.items()}), dim=1)
    cosine = embeddings @ embeddings.T
    return float(cosine[~torch.eye(len(cosine), dtype=torch.bool)].mean())


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, SimCSETrainingArguments))
    if model_args.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {list(PRESETS)}, got {model_args.preset!r}.")

    raw = data_args.load(seed=training_args.seed)
    tokenizer = load_or_train_tokenizer(
        model_args.tokenizer_name or model_args.model_name_or_path, lambda: train_wordpiece_tokenizer(raw["train"]["text"], model_args.vocab_size), training_args
    )
    with training_args.main_process_first(desc="tokenizing"):
        sentences = raw.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=data_args.max_seq_length),
                            batched=True, remove_columns=["text"])

    if model_args.model_name_or_path is not None:
        encoder = AutoModel.from_pretrained(model_args.model_name_or_path)
    else:
        hidden, layers, heads = PRESETS[model_args.preset]
        encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                                       num_attention_heads=heads, intermediate_size=4 * hidden,
                                       max_position_embeddings=max(512, data_args.max_seq_length),
                                       pad_token_id=tokenizer.pad_token_id))
    model = SimCSEModel.from_encoder(encoder, temperature=model_args.temperature)
    collator = DataCollatorWithPadding(tokenizer)
    held_out = collator([sentences["validation"][i] for i in range(min(256, len(sentences["validation"])))])
    before = mean_cosine(model, held_out)
    queries, documents = split_into_halves(raw["validation"]["text"][:1000])

    def encode(texts: list[str]) -> torch.Tensor:
        model.eval()
        batch = tokenizer(texts, truncation=True, max_length=data_args.max_seq_length, padding=True, return_tensors="pt")
        return model.encode(**{k: v.to(model.device) for k, v in batch.items() if k != "token_type_ids"}).cpu()

    retrieval_before = pair_retrieval_scores(encode, queries, documents)

    trainer = SafeTrainer(model=model, args=training_args, train_dataset=sentences["train"], data_collator=collator,
                      processing_class=tokenizer)
    logger.info("%d training sentences, model of %.1fM parameters", len(sentences["train"]), model.num_parameters() / 1e6)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = {"train_loss": train_result.training_loss, "anisotropy_before": before,
               "anisotropy_after": mean_cosine(model, held_out), "retrieval_pairs": len(queries)}
    metrics.update({f"{name}_before": value for name, value in retrieval_before.items()})
    metrics.update({f"{name}_after": value for name, value in pair_retrieval_scores(encode, queries, documents).items()})
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("all", metrics)
    trainer.save_model(training_args.output_dir)  # SimCSEModel (safetensors), config and tokenizer, to resume
    if trainer.is_world_process_zero():
        export_dir = save_sentence_encoder(model, tokenizer, os.path.join(training_args.output_dir, "export"),
                                           data_args.max_seq_length)  # transformers + sentence-transformers layout
        trainer.create_model_card(
            folder=export_dir, method="Unsupervised SimCSE (Gao et al., 2021)",
            architecture=type(model.encoder).__name__,
            dataset=data_args.dataset_name or data_args.train_file or "CPython's bundled documentation (built-in)",
            pipeline_tag="sentence-similarity", metrics=metrics, tags=["sentence-transformers"],
            hyperparameters={"pooling": "[CLS] last hidden state, no MLP", "temperature": model_args.temperature,
                             "max_seq_length": data_args.max_seq_length},
            usage=USAGE.replace("{max_seq_length}", str(data_args.max_seq_length)),
        )
        if training_args.push_to_hub:
            trainer.push_to_hub()
        print(f"\nSentence encoder exported to {export_dir.resolve()} (AutoModel and SentenceTransformer load it; "
              "the full SimCSEModel in its ssl_model/)")
        print(f"Mean cosine between held-out sentences: {before:.3f} before, {metrics['anisotropy_after']:.3f} after")
        print(f"Held-out half-paragraph retrieval over {len(queries)} pairs: recall@1 "
              f"{metrics['recall@1_before']:.3f} before, {metrics['recall@1_after']:.3f} after; "
              f"MRR {metrics['mrr_before']:.3f} -> {metrics['mrr_after']:.3f}")


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

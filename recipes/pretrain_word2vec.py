"""Word2Vec (skip-gram with negative sampling) with hfssl's DataCollatorForSkipGram and Word2VecModel.

    python recipes/pretrain_word2vec.py                             # built-in corpus, about a minute on 2 CPUs
    python recipes/pretrain_word2vec.py recipes/configs/word2vec_python_docs.yaml
    python recipes/pretrain_word2vec.py --dataset_name wikitext --dataset_config_name wikitext-103-raw-v1 \
        --embedding_dim 300 --min_count 5

With no dataset named it trains on CPython's bundled documentation and stdlib docstrings. Each text is one
"sentence" (windows never cross texts); without --tokenizer_name a word-level tokenizer keeps the words seen at
least --min_count times. Training is word2vec's: plain SGD at 0.025 decaying linearly, sparse updates, 5 epochs.
It prints the nearest neighbours of --query_words and the answer to --analogy ("a,b,c": a is to b as c is to ?).
On CPU the per-step tensors are small, so torch's intra-op threads cost more than they give: run with
OMP_NUM_THREADS=1, and add --dataloader_num_workers 1 to collate in parallel.
"""

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from hfssl.collators.skip_gram import DataCollatorForSkipGram, count_token_ids
from hfssl.data.text import TextDataArguments
from hfssl.data.tokenizer_training import load_or_train_tokenizer, train_word_level_tokenizer
from hfssl.distributed import end_processes
from hfssl.models.word2vec import Word2VecConfig, Word2VecModel
from hfssl.cli import parse_recipe_arguments
from hfssl.trainers.safe_trainer import SafeTrainer

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "A saved Word2VecModel to continue."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Word-level tokenizer; else one is built."})
    embedding_dim: int = field(default=100, metadata={"help": "Vector size (gensim's default; the paper uses 300)."})
    min_count: int = field(default=5, metadata={"help": "Words seen fewer times are dropped (word2vec's default)."})


@dataclass
class DataArguments(TextDataArguments):
    window: int = field(default=5, metadata={"help": "Largest distance between a centre word and its context words."})
    num_negatives: int = field(default=5, metadata={"help": "Negative samples per positive pair (word2vec: 5)."})
    subsample_threshold: float = field(
        default=1e-3, metadata={"help": "Frequent-word subsampling threshold t (word2vec: 1e-3; 0 keeps every word)."}
    )
    query_words: str = field(default="true,read,list,int,file", metadata={"help": "Comma-separated words."})
    analogy: str | None = field(default="read,reader,write", metadata={"help": "a,b,c: a is to b as c is to ?"})


@dataclass
class Word2VecTrainingArguments(TrainingArguments):
    """word2vec.c's optimisation: SGD at 0.025 decaying linearly, no clipping (sparse gradients), 5 epochs."""

    output_dir: str | None = field(default="outputs/pretrain_word2vec")
    num_train_epochs: float = field(default=5.0)
    per_device_train_batch_size: int = field(default=16)
    optim: str = field(default="sgd")
    learning_rate: float = field(default=0.025)
    lr_scheduler_type: str = field(default="linear")
    max_grad_norm: float = field(default=0.0)
    remove_unused_columns: bool = field(default=False)
    logging_steps: float = field(default=200)
    save_strategy: str = field(default="no")


def check_sparse_gradients_supported(model: Word2VecModel) -> None:
    """transformers' Trainer logs the gradient norm of every step, and `clip_grad_norm_` of sparse gradients needs a
    recent PyTorch (2.11 lacks it; 2.14 has it): fail before training, naming the fix, rather than at the first step."""
    if not model.config.sparse:
        return
    probe = torch.nn.Embedding(2, 1, sparse=True)
    probe(torch.tensor([0])).sum().backward()
    try:
        torch.nn.utils.clip_grad_norm_(probe.parameters(), float("inf"))
    except (NotImplementedError, RuntimeError) as error:
        raise RuntimeError(
            f"PyTorch {torch.__version__} cannot take the norm of sparse gradients, which transformers' Trainer logs "
            "each step. Upgrade PyTorch (2.14 works), or train with dense gradients: pass a model saved with "
            "Word2VecConfig(sparse=False) as --model_name_or_path."
        ) from error


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, Word2VecTrainingArguments))

    raw = data_args.load(seed=training_args.seed)

    tokenizer = load_or_train_tokenizer(
        model_args.tokenizer_name or model_args.model_name_or_path, lambda: train_word_level_tokenizer(raw["train"]["text"], min_count=model_args.min_count), training_args
    )
    with training_args.main_process_first(desc="tokenizing"):
        train_set = raw["train"].map(lambda batch: tokenizer(batch["text"], add_special_tokens=False), batched=True,
                                     remove_columns=["text"], num_proc=data_args.preprocessing_num_workers)
    counts = count_token_ids(train_set["input_ids"], len(tokenizer), tokenizer.all_special_ids)

    if model_args.model_name_or_path is not None:
        model = Word2VecModel.from_pretrained(model_args.model_name_or_path)
    else:
        model = Word2VecModel(Word2VecConfig(vocab_size=len(tokenizer), embedding_dim=model_args.embedding_dim))
    check_sparse_gradients_supported(model)
    collator = DataCollatorForSkipGram(counts, window=data_args.window, num_negatives=data_args.num_negatives,
                                       subsample_threshold=data_args.subsample_threshold, seed=training_args.seed)
    trainer = SafeTrainer(model=model, args=training_args, train_dataset=train_set, data_collator=collator,
                      processing_class=tokenizer)
    logger.info("%d texts, %d words, vocabulary of %d, model of %.1fM parameters", len(train_set),
                int(counts.sum()), int((counts > 0).sum()), model.num_parameters() / 1e6)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_model(training_args.output_dir)  # safetensors weights, config and tokenizer
    trainer.create_model_card(
        method="Word2Vec skip-gram with negative sampling", architecture="Word2VecModel (hfssl)",
        pipeline_tag="feature-extraction", metrics={"train_loss": train_result.training_loss},
        dataset=data_args.dataset_name or data_args.train_file or "CPython's bundled documentation (built-in)",
        hyperparameters={"embedding_dim": model.config.embedding_dim, "window": data_args.window,
                         "num_negatives": data_args.num_negatives},
        usage='import hfssl  # registers Word2VecModel with AutoModel\nfrom transformers import AutoModel\n'
              'model = AutoModel.from_pretrained("{path}")',
    )
    if training_args.push_to_hub:
        trainer.push_to_hub()
    if not trainer.is_world_process_zero():
        return

    print(f"\nModel saved to {os.path.abspath(training_args.output_dir)}")
    known = counts > 0
    vocab = tokenizer.get_vocab()
    words = [word for word in data_args.query_words.split(",") if word and vocab.get(word, -1) >= 0 and known[vocab[word]]]
    if words:
        scores, ids = model.most_similar(torch.tensor([vocab[word] for word in words]), k=8, allowed=known)
        for word, row_scores, row_ids in zip(words, scores.tolist(), ids.tolist()):
            neighbours = ", ".join(f"{tokenizer.convert_ids_to_tokens(i)} {s:.2f}" for i, s in zip(row_ids, row_scores))
            print(f"nearest to {word!r}: {neighbours}")
    analogy = data_args.analogy.split(",") if data_args.analogy else []
    if len(analogy) == 3 and all(word in vocab and known[vocab[word]] for word in analogy):
        a, b, c = (torch.tensor([vocab[word]]) for word in analogy)
        _, answer = model.analogy(a, b, c, k=3, allowed=known)
        print(f"{analogy[0]} : {analogy[1]} :: {analogy[2]} : ?  ->  "
              f"{', '.join(tokenizer.convert_ids_to_tokens(answer[0].tolist()))}")


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

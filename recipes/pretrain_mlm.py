"""Masked language model pretraining (BERT, ModernBERT, RoBERTa, ...) with hfssl's DataCollatorForMaskedLM.

    accelerate launch recipes/pretrain_mlm.py                       # built-in corpus, small ModernBERT, < 5 min on 2 CPUs
    accelerate launch recipes/pretrain_mlm.py recipes/configs/mlm_tiny.yaml
    accelerate launch --num_processes 8 recipes/pretrain_mlm.py --dataset_name wikitext \
        --dataset_config_name wikitext-103-raw-v1 --model_name_or_path bert-base-uncased --max_steps 100000

With no dataset named it trains on CPython's bundled documentation and stdlib docstrings. Without
--tokenizer_name (or --model_name_or_path) a WordPiece tokenizer is trained on the training text.
It prints the held-out masked-token accuracy and perplexity, and the most-frequent-token baseline.
"""

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, TrainingArguments

from hfssl import DataCollatorForMaskedLM
from hfssl.data.text import TextDataArguments, tokenize_and_pack, train_wordpiece_tokenizer
from hfssl.distributed import end_processes
from hfssl.evaluation.masked_lm import (
    evaluate_masked_lm, masked_lm_metrics, most_frequent_token, premask_dataset, preprocess_logits_for_masked_lm,
)  # fmt: skip
from hfssl.cli import TextModelArguments, parse_recipe_arguments, save_text_model
from hfssl.data.tokenizer_training import load_or_train_tokenizer
from hfssl.trainers.safe_trainer import SafeTrainer

logger = logging.getLogger(__name__)
USAGE = """from transformers import pipeline
fill = pipeline("fill-mask", model="{path}")
print(fill(f"the {fill.tokenizer.mask_token} statement raises an exception."))"""

# Sizes for training from scratch: (hidden size, layers, heads). "mini"/"small"/"medium" follow
# Turc et al. 2019 ("Well-Read Students Learn Better"); "tiny" is for tests and laptops.
PRESETS = {"tiny": (64, 2, 2), "micro": (128, 2, 2), "mini": (256, 4, 4), "small": (512, 4, 8), "medium": (512, 8, 8), "base": (768, 12, 12)}


@dataclass
class ModelArguments(TextModelArguments):
    model_type: str = field(default="modernbert", metadata={"help": "Architecture from scratch: modernbert, bert, ..."})
    preset: str = field(default="micro", metadata={"help": f"Size from scratch: {', '.join(PRESETS)}."})
    vocab_size: int = field(default=4000, metadata={"help": "Vocabulary of the trained tokenizer."})


@dataclass
class DataArguments(TextDataArguments):
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens to predict (BERT: 0.15)."})
    selection: str = field(default="bernoulli", metadata={"help": "bernoulli or exact."})
    whole_word_mask: bool = field(default=False, metadata={"help": "Mask whole words (all pieces of a word together)."})
    span_masking: bool = field(
        default=False, metadata={"help": "Mask contiguous spans (SpanBERT's geometric span lengths)."}
    )


@dataclass
class MLMTrainingArguments(TrainingArguments):
    """TrainingArguments with defaults that finish the built-in run in minutes on a laptop CPU."""

    output_dir: str | None = field(default="outputs/pretrain_mlm")
    max_steps: int = field(default=800)
    per_device_train_batch_size: int = field(default=32)
    per_device_eval_batch_size: int = field(default=64)
    learning_rate: float = field(default=1e-3)
    weight_decay: float = field(default=0.01)
    warmup_steps: float = field(default=40)
    logging_steps: float = field(default=50)
    save_strategy: str = field(default="no")

    def __post_init__(self) -> None:
        # Several processes (torchrun, accelerate launch) and no accelerator: one gloo MULTI_CPU job,
        # not N independent runs (accelerate only goes MULTI_CPU when told the run is on CPU).
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
            self.use_cpu = True
        super().__post_init__()


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, MLMTrainingArguments))
    model_args.check_preset(PRESETS)

    raw = data_args.load(seed=training_args.seed)

    tokenizer = load_or_train_tokenizer(
        model_args.tokenizer_name or model_args.model_name_or_path, lambda: train_wordpiece_tokenizer(raw["train"]["text"], model_args.vocab_size), training_args
    )
    with training_args.main_process_first(desc="tokenizing"):
        blocks = tokenize_and_pack(raw, tokenizer, data_args.max_seq_length, num_proc=data_args.preprocessing_num_workers)

    hidden, layers, heads = PRESETS[model_args.preset]
    preset = AutoConfig.for_model(
        model_args.model_type, vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=4 * hidden,
        max_position_embeddings=max(512, data_args.max_seq_length) + 2, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
        **({"sparse_prediction": True} if model_args.model_type == "modernbert" else {}),
    )
    model = model_args.build_model(AutoModelForMaskedLM, tokenizer, preset)

    collator = DataCollatorForMaskedLM(
        tokenizer, mlm_probability=data_args.mlm_probability, selection=data_args.selection,
        whole_word_mask=data_args.whole_word_mask, span_masking=data_args.span_masking,
        max_length=data_args.max_seq_length, seed=training_args.seed,
    )
    baseline_id, _ = most_frequent_token(blocks["train"]["input_ids"], tokenizer.all_special_ids)
    eval_blocks = premask_dataset(blocks["validation"], collator, seed=training_args.seed)
    trainer = SafeTrainer(
        model=model, args=training_args, train_dataset=blocks["train"], data_collator=collator,
        eval_dataset=eval_blocks if training_args.eval_strategy == "no" else blocks["validation"],
        processing_class=tokenizer, compute_metrics=masked_lm_metrics(baseline_id),
        preprocess_logits_for_metrics=preprocess_logits_for_masked_lm,
    )
    logger.info("%d training blocks of %d tokens, %d held-out blocks, model of %.1fM parameters",
                len(blocks["train"]), data_args.max_seq_length, len(eval_blocks), model.num_parameters() / 1e6)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = evaluate_masked_lm(trainer, eval_blocks)
    metrics["train_loss"] = train_result.training_loss
    save_text_model(
        trainer, data_args, metrics, method="Masked language modelling", pipeline_tag="fill-mask", usage=USAGE,
        hyperparameters={"max_seq_length": data_args.max_seq_length, "mlm_probability": data_args.mlm_probability,
                         "selection": data_args.selection, "whole_word_mask": data_args.whole_word_mask,
                         "span_masking": data_args.span_masking},
    )
    if trainer.is_world_process_zero():
        print(f"Held-out masked-token accuracy: {metrics['eval_masked_accuracy']:.4f} "
              f"(most-frequent-token baseline {metrics['eval_baseline_accuracy']:.4f}), "
              f"perplexity {metrics['eval_perplexity']:.1f}")


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

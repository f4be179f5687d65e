"""T5 span-corruption pretraining with hfssl's DataCollatorForSpanCorruption.

    accelerate launch recipes/pretrain_t5.py                        # built-in corpus, tiny T5, minutes on 2 CPUs
    accelerate launch recipes/pretrain_t5.py recipes/configs/t5_tiny.yaml
    accelerate launch --num_processes 8 recipes/pretrain_t5.py --dataset_name wikitext \
        --dataset_config_name wikitext-103-raw-v1 --model_name_or_path google-t5/t5-small --max_steps 100000

With no dataset named it trains on CPython's bundled documentation and stdlib docstrings. Without
--tokenizer_name (or --model_name_or_path) a Unigram tokenizer with 100 sentinels is trained on the training text.
Text is packed so that every encoder input has exactly --max_seq_length tokens (T5's
compute_input_and_target_lengths). It prints the held-out target-token accuracy and perplexity.
"""

import logging
from dataclasses import dataclass, field

from transformers import AutoModelForSeq2SeqLM, T5Config, TrainingArguments

from hfssl.collators.span_corruption import DataCollatorForSpanCorruption, compute_input_and_target_lengths
from hfssl.data.text import TextDataArguments, tokenize_and_pack
from hfssl.data.tokenizer_training import load_or_train_tokenizer, train_unigram_tokenizer
from hfssl.distributed import end_processes
from hfssl.evaluation.masked_lm import (
    evaluate_masked_lm, masked_lm_metrics, premask_dataset, preprocess_logits_for_masked_lm,
)  # fmt: skip
from hfssl.cli import TextModelArguments, parse_recipe_arguments, save_text_model
from hfssl.trainers.safe_trainer import SafeTrainer

logger = logging.getLogger(__name__)

# Sizes from scratch: (d_model, layers per stack, heads, d_ff). "small" and "base" are T5's (Raffel et al., 2020);
# "tiny" is for tests and laptops.
PRESETS = {"tiny": (64, 2, 2, 256), "mini": (256, 4, 4, 1024), "small": (512, 6, 8, 2048), "base": (768, 12, 12, 3072)}


@dataclass
class ModelArguments(TextModelArguments):
    preset: str = field(default="tiny", metadata={"help": f"Size from scratch: {', '.join(PRESETS)}."})
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary of the trained tokenizer (before sentinels)."})


@dataclass
class DataArguments(TextDataArguments):
    max_seq_length: int = field(default=128, metadata={"help": "Encoder input length after corruption (T5: 512)."})
    noise_density: float = field(default=0.15, metadata={"help": "Fraction of tokens corrupted (T5: 0.15)."})
    mean_noise_span_length: float = field(default=3.0, metadata={"help": "Mean length of a corrupted span (T5: 3)."})


@dataclass
class T5TrainingArguments(TrainingArguments):
    """TrainingArguments with defaults that finish the built-in run in minutes on a laptop CPU."""

    output_dir: str | None = field(default="outputs/pretrain_t5")
    max_steps: int = field(default=1200)
    per_device_train_batch_size: int = field(default=64)
    per_device_eval_batch_size: int = field(default=64)
    learning_rate: float = field(default=1e-3)
    weight_decay: float = field(default=0.01)
    warmup_steps: float = field(default=100)
    logging_steps: float = field(default=50)
    save_strategy: str = field(default="no")


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, T5TrainingArguments))
    model_args.check_preset(PRESETS)

    raw = data_args.load(seed=training_args.seed)

    tokenizer = load_or_train_tokenizer(
        model_args.tokenizer_name or model_args.model_name_or_path, lambda: train_unigram_tokenizer(raw["train"]["text"], model_args.vocab_size), training_args
    )
    raw_length, target_length = compute_input_and_target_lengths(
        data_args.max_seq_length, data_args.noise_density, data_args.mean_noise_span_length
    )
    with training_args.main_process_first(desc="tokenizing"):
        blocks = tokenize_and_pack(raw, tokenizer, raw_length, return_special_tokens_mask=False,
                                   num_proc=data_args.preprocessing_num_workers)

    d_model, layers, heads, d_ff = PRESETS[model_args.preset]
    preset = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // heads, d_ff=d_ff, num_layers=layers, num_heads=heads,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )
    model = model_args.build_model(AutoModelForSeq2SeqLM, tokenizer, preset)

    collator = DataCollatorForSpanCorruption(
        tokenizer, noise_density=data_args.noise_density, mean_noise_span_length=data_args.mean_noise_span_length,
        input_length=data_args.max_seq_length, add_sentinel_tokens=True, seed=training_args.seed,
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    eval_blocks = premask_dataset(blocks["validation"], collator, seed=training_args.seed)
    trainer = SafeTrainer(
        model=model, args=training_args, train_dataset=blocks["train"], data_collator=collator,
        eval_dataset=eval_blocks if training_args.eval_strategy == "no" else blocks["validation"],
        processing_class=tokenizer, compute_metrics=masked_lm_metrics(),
        preprocess_logits_for_metrics=preprocess_logits_for_masked_lm,
    )
    logger.info("%d training blocks of %d raw tokens (inputs %d, targets %d), %d held-out, model of %.1fM parameters",
                len(blocks["train"]), raw_length, data_args.max_seq_length, target_length, len(eval_blocks),
                model.num_parameters() / 1e6)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = evaluate_masked_lm(trainer, eval_blocks)
    metrics["train_loss"] = train_result.training_loss
    save_text_model(
        trainer, data_args, metrics, method="T5 span corruption", pipeline_tag="text2text-generation",
        hyperparameters={"input_length": data_args.max_seq_length, "noise_density": data_args.noise_density,
                         "mean_noise_span_length": data_args.mean_noise_span_length},
        usage='from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n'
              'model = AutoModelForSeq2SeqLM.from_pretrained("{path}")\ntokenizer = AutoTokenizer.from_pretrained("{path}")',
    )
    if trainer.is_world_process_zero():
        print(f"Held-out target-token accuracy: {metrics['eval_masked_accuracy']:.4f}, "
              f"perplexity {metrics['eval_perplexity']:.1f}")


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

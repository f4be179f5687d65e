"""Causal language model pretraining (GPT-2 or Llama style) on packed text blocks.

    accelerate launch recipes/pretrain_clm.py                       # built-in corpus, tiny GPT-2, minutes on 2 CPUs
    accelerate launch recipes/pretrain_clm.py recipes/configs/clm_tiny.yaml
    accelerate launch recipes/pretrain_clm.py --model_type llama --preset mini
    accelerate launch --num_processes 8 recipes/pretrain_clm.py --dataset_name wikitext \
        --dataset_config_name wikitext-103-raw-v1 --model_name_or_path openai-community/gpt2 --max_steps 100000

Any AutoModelForCausalLM works through --model_name_or_path or --config_name. With no dataset named it trains on
CPython's bundled documentation and stdlib docstrings; without --tokenizer_name (or --model_name_or_path) a
byte-level BPE tokenizer is trained on the training text. Batching is transformers' own: packed blocks carry
`labels = input_ids` and `default_data_collator` stacks them (the model shifts the labels), as in `run_clm.py`.
It prints the held-out perplexity.
"""

import logging
import math
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, TrainingArguments, default_data_collator

from hfssl.data.text import TextDataArguments, tokenize_and_pack
from hfssl.data.tokenizer_training import load_or_train_tokenizer, train_byte_level_bpe_tokenizer
from hfssl.distributed import end_processes
from hfssl.cli import TextModelArguments, parse_recipe_arguments, save_text_model
from hfssl.trainers.safe_trainer import SafeTrainer

logger = logging.getLogger(__name__)

# Sizes from scratch: (hidden size, layers, heads). "small" is GPT-2 small (Radford et al., 2019); "tiny" is for
# tests and laptops.
PRESETS = {"tiny": (64, 2, 2), "mini": (256, 4, 4), "medium": (512, 8, 8), "small": (768, 12, 12)}
MODEL_TYPES = ("gpt2", "llama")


@dataclass
class ModelArguments(TextModelArguments):
    model_type: str = field(default="gpt2", metadata={"help": f"Architecture from scratch: {', '.join(MODEL_TYPES)}."})
    preset: str = field(default="tiny", metadata={"help": f"Size from scratch: {', '.join(PRESETS)}."})


@dataclass
class DataArguments(TextDataArguments):
    """The shared text options."""


@dataclass
class CLMTrainingArguments(TrainingArguments):
    """TrainingArguments with defaults that finish the built-in run in minutes on a laptop CPU."""

    output_dir: str | None = field(default="outputs/pretrain_clm")
    max_steps: int = field(default=1200)
    per_device_train_batch_size: int = field(default=32)
    per_device_eval_batch_size: int = field(default=32)
    learning_rate: float = field(default=1e-3)
    weight_decay: float = field(default=0.01)
    warmup_steps: float = field(default=100)
    logging_steps: float = field(default=50)
    save_strategy: str = field(default="no")


def main() -> None:
    model_args, data_args, training_args = parse_recipe_arguments((ModelArguments, DataArguments, CLMTrainingArguments))
    model_args.check_preset(PRESETS)
    if model_args.model_type not in MODEL_TYPES:
        raise ValueError(f"--model_type must be one of {list(MODEL_TYPES)}, got {model_args.model_type!r}; use "
                         "--config_name or --model_name_or_path for other architectures.")

    raw = data_args.load(seed=training_args.seed)

    tokenizer = load_or_train_tokenizer(
        model_args.tokenizer_name or model_args.model_name_or_path,
        lambda: train_byte_level_bpe_tokenizer(raw["train"]["text"], model_args.vocab_size,
                                               model_max_length=max(1024, data_args.max_seq_length)),
        training_args,
    )
    with training_args.main_process_first(desc="tokenizing"):
        blocks = tokenize_and_pack(raw, tokenizer, data_args.max_seq_length, return_special_tokens_mask=False,
                                   num_proc=data_args.preprocessing_num_workers)
        blocks = blocks.map(lambda batch: {"labels": batch["input_ids"]}, batched=True, desc="Adding labels")

    hidden, layers, heads = PRESETS[model_args.preset]
    if model_args.model_type == "gpt2":
        preset = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden, n_layer=layers, n_head=heads,
                            n_positions=max(1024, data_args.max_seq_length), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    else:
        preset = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                             max_position_embeddings=max(2048, data_args.max_seq_length),
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = model_args.build_model(AutoModelForCausalLM, tokenizer, preset)

    trainer = SafeTrainer(model=model, args=training_args, train_dataset=blocks["train"],
                          eval_dataset=blocks["validation"], data_collator=default_data_collator,
                          processing_class=tokenizer)
    logger.info("%d training blocks of %d tokens, %d held-out blocks, model of %.1fM parameters",
                len(blocks["train"]), data_args.max_seq_length, len(blocks["validation"]), model.num_parameters() / 1e6)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate()
    metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    metrics["train_loss"] = train_result.training_loss
    save_text_model(
        trainer, data_args, metrics, method="Causal language modelling", pipeline_tag="text-generation",
        hyperparameters={"max_seq_length": data_args.max_seq_length},
        usage='from transformers import pipeline\nprint(pipeline("text-generation", model="{path}")'
              '("The for statement")[0]["generated_text"])',
    )
    if trainer.is_world_process_zero():
        print(f"Held-out perplexity: {metrics['eval_perplexity']:.1f} (uniform over the vocabulary: {len(tokenizer)})")


if __name__ == "__main__":
    main()
    end_processes()  # a clean exit under torchrun / accelerate launch

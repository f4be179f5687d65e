"""Text augmentations for contrastive text methods: EDA's four word-level ops and a back-translation hook.

The EDA ops (Wei and Zou, 2019, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
Classification Tasks", EMNLP) take and return lists of whitespace-separated words and draw every random choice from
the `torch.Generator` they are given, so a collator can apply them reproducibly per worker. Synonyms come from a
table the user supplies (no WordNet download).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hfssl.augmentations.seeding import WorkerSeededGenerator

EDA_OPERATIONS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def random_deletion(words: Sequence[str], p: float, generator: torch.Generator | None = None) -> list[str]:
    """Delete each word with probability `p` (EDA: 0.1); if every word goes, keep one at random (EDA's RD). Returns
    a new list."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Deletion probability p must be in [0, 1], got {p}.")
    if len(words) <= 1:
        return list(words)
    keep = (torch.rand(len(words), generator=generator) >= p).tolist()
    kept = [word for word, keep_it in zip(words, keep) if keep_it]
    return kept or [words[_randint(len(words), generator)]]


def random_swap(words: Sequence[str], n: int, generator: torch.Generator | None = None) -> list[str]:
    """Swap two random positions, `n` times (EDA's RS). Returns a new list."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = torch.randint(len(out), (2,), generator=generator).tolist()
        out[i], out[j] = out[j], out[i]
    return out


def synonym_replacement(
    words: Sequence[str], n: int, synonyms: Mapping[str, Sequence[str]], generator: torch.Generator | None = None,
    stopwords: frozenset[str] | set[str] = frozenset(),
) -> list[str]:
    """Replace up to `n` distinct words that have synonyms (and are not stopwords) by a random synonym (EDA's SR):
    every occurrence of a chosen word by the same synonym, as EDA's reference code does. Lookups use the lowercased
    word. Returns a new list."""
    out = list(words)
    candidates = sorted({w for w in out if w.lower() not in stopwords and synonyms.get(w.lower())})
    order = torch.randperm(len(candidates), generator=generator).tolist()
    for index in order[:n]:
        word = candidates[index]
        choices = [s for s in synonyms[word.lower()] if s != word]
        if not choices:
            continue
        replacement = choices[_randint(len(choices), generator)]
        out = [replacement if w == word else w for w in out]
    return out


def random_insertion(
    words: Sequence[str], n: int, synonyms: Mapping[str, Sequence[str]], generator: torch.Generator | None = None,
    stopwords: frozenset[str] | set[str] = frozenset(),
) -> list[str]:
    """Insert a random synonym of a random word (one with synonyms) at a random position, `n` times (EDA's RI).
    Returns a new list (unchanged when no word has a synonym)."""
    out = list(words)
    for _ in range(n):
        candidates = [w for w in out if w.lower() not in stopwords and synonyms.get(w.lower())]
        if not candidates:
            break
        word = candidates[_randint(len(candidates), generator)]
        choices = list(synonyms[word.lower()])
        out.insert(_randint(len(out) + 1, generator), choices[_randint(len(choices), generator)])
    return out


@dataclass
class EasyDataAugmentation:
    """EDA (Wei and Zou, 2019) on whole texts: each call applies one of the four ops, chosen uniformly, per text.

    Args:
        synonyms (`Mapping[str, Sequence[str]]`, defaults to `{}`): lowercase word -> synonyms. Without it, SR and RI
            are skipped (only swap and deletion are drawn).
        alpha_sr (`float`, defaults to 0.1), alpha_ri (`float`, defaults to 0.1), alpha_rs (`float`, defaults to
            0.1): share of words changed by SR, RI and RS, `n = max(1, int(alpha * num_words))` (EDA's defaults).
        p_rd (`float`, defaults to 0.1): deletion probability of RD (EDA's default).
        operations (`tuple[str, ...]`, defaults to all four): the ops to draw from, by name (`EDA_OPERATIONS`).
        stopwords (`frozenset[str]`, defaults to empty): words SR and RI never pick.
        seed (`int`, *optional*): seed of the generator (`hfssl.WorkerSeededGenerator`: distinct per DataLoader
            worker and per process); `None` seeds it from torch's global RNG at first use.

    Call with a string or a list of strings; returns the same shape. Inputs are never modified.
    """

    synonyms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    alpha_sr: float = 0.1
    alpha_ri: float = 0.1
    alpha_rs: float = 0.1
    p_rd: float = 0.1
    operations: tuple[str, ...] = EDA_OPERATIONS
    stopwords: frozenset[str] = frozenset()
    seed: int | None = None
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = WorkerSeededGenerator(self.seed)
        unknown = [name for name in self.operations if name not in EDA_OPERATIONS]
        if unknown or not self.operations:
            raise ValueError(
                f"operations must be a non-empty subset of {EDA_OPERATIONS}, got {tuple(self.operations)}."
            )
        for name in ("alpha_sr", "alpha_ri", "alpha_rs", "p_rd"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        self.operations = tuple(self.operations)
        if not self.synonyms:
            self.operations = tuple(n for n in self.operations if n not in ("synonym_replacement", "random_insertion"))
            if not self.operations:
                raise ValueError(
                    "Synonym replacement and random insertion need a synonym table; pass synonyms={'word': [...]} or "
                    "add 'random_swap' or 'random_deletion' to operations."
                )

    def augment_words(self, words: Sequence[str], generator: torch.Generator | None = None) -> list[str]:
        """Apply one randomly chosen op to a list of words."""
        name = self.operations[_randint(len(self.operations), generator)]
        if name == "random_deletion":
            return random_deletion(words, self.p_rd, generator)
        alpha = {"synonym_replacement": self.alpha_sr, "random_insertion": self.alpha_ri, "random_swap": self.alpha_rs}
        n = max(1, int(alpha[name] * len(words)))
        if name == "random_swap":
            return random_swap(words, n, generator)
        op = synonym_replacement if name == "synonym_replacement" else random_insertion
        return op(words, n, self.synonyms, generator, self.stopwords)

    def __call__(self, texts: str | Sequence[str]) -> str | list[str]:
        generator = self._rng.get()
        if isinstance(texts, str):
            return " ".join(self.augment_words(texts.split(), generator))
        return [" ".join(self.augment_words(text.split(), generator)) for text in texts]


@dataclass
class Seq2SeqTranslator:
    """A translation callable from any transformers sequence-to-sequence model (Marian `opus-mt-*`, T5, NLLB, ...).

    transformers 5 removed the `translation` pipeline; this is the few lines it did: tokenize, `generate`, decode.

    Args:
        model (`PreTrainedModel`): e.g. `AutoModelForSeq2SeqLM.from_pretrained("Helsinki-NLP/opus-mt-en-de")`.
        tokenizer (`PreTrainedTokenizerBase`).
        prefix (`str`, defaults to `""`): prepended to every text (T5 wants `"translate English to German: "`).
        max_length (`int`, defaults to 256): inputs are truncated to this many tokens.

    Call with a list of texts (and `generate` keyword arguments); returns the translations as strings.
    """

    model: Any
    tokenizer: Any
    prefix: str = ""
    max_length: int = 256

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], **generate_kwargs) -> list[str]:
        inputs = self.tokenizer([self.prefix + text for text in texts], return_tensors="pt", padding=True,
                                truncation=True, max_length=self.max_length).to(self.model.device)
        outputs = self.model.generate(**inputs, **generate_kwargs)
        return self.tokenizer.batch_decode(outputs, skip_special_tokens=True)


def _as_text(result: Any) -> str:
    """The text of one output of a translation callable: a string, or a pipeline's dict (or a list holding one)."""
    if isinstance(result, list) and len(result) == 1:
        result = result[0]
    if isinstance(result, str):
        return result
    if isinstance(result, Mapping):
        for key in ("translation_text", "generated_text"):
            if isinstance(result.get(key), str):
                return result[key]
    raise TypeError(
        "Expected a string or a transformers pipeline output ({'translation_text': ...} or {'generated_text': ...}) "
        f"per text, got {type(result).__name__}: {str(result)[:80]}."
    )


@dataclass
class BackTranslation:
    """Paraphrase texts by translating them to a pivot language and back (Sennrich et al., 2016; Xie et al., 2020).

    Args:
        forward (`Callable`): translates a list of texts to the pivot language: a `Seq2SeqTranslator` around e.g.
            `Helsinki-NLP/opus-mt-en-de`, a transformers `text-generation` pipeline of a chat/instruction model (with
            `forward_prompt`), or a transformers 4 `translation` pipeline. It returns, per text, a string or a dict
            with `translation_text` or `generated_text` (or a list holding one).
        backward (`Callable`): the same for the way back (e.g. `opus-mt-de-en`).
        forward_prompt (`str`, *optional*), backward_prompt (`str`, *optional*): templates with `{text}`, e.g.
            `"Translate into German: {text}\nGerman:"`, for generative models.
        batch_size (`int`, defaults to 32): texts per call.
        generate_kwargs (`dict`, defaults to `{}`): passed to both callables, e.g. `{"do_sample": True, "top_k": 10}`
            for diverse paraphrases (UDA samples rather than using beam search), or `{"return_full_text": False}`
            for a text-generation pipeline.

    Call with a string or a list of strings; returns the same shape.
    """

    forward: Callable[..., Any]
    backward: Callable[..., Any]
    forward_prompt: str | None = None
    backward_prompt: str | None = None
    batch_size: int = 32
    generate_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.forward) or not callable(self.backward):
            raise TypeError(
                "forward and backward must be callables such as hfssl's Seq2SeqTranslator or a transformers pipeline, "
                f"got {type(self.forward).__name__} and {type(self.backward).__name__}."
            )
        for name in ("forward_prompt", "backward_prompt"):
            template = getattr(self, name)
            if template is not None and "{text}" not in template:
                raise ValueError(f"{name} must contain '{{text}}' where the text goes, got {template!r}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")

    def _translate(self, translate: Callable[..., Any], texts: list[str], prompt: str | None) -> list[str]:
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            if prompt is not None:
                chunk = [prompt.format(text=text) for text in chunk]
            results = translate(chunk, **self.generate_kwargs)
            if len(results) != len(chunk):
                raise ValueError(f"The translation callable returned {len(results)} results for {len(chunk)} texts.")
            out.extend(_as_text(result).strip() for result in results)
        return out

    def __call__(self, texts: str | Sequence[str]) -> str | list[str]:
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        pivot = self._translate(self.forward, batch, self.forward_prompt)
        paraphrases = self._translate(self.backward, pivot, self.backward_prompt)
        return paraphrases[0] if single else paraphrases

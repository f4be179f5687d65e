"""Word2Vec's skip-gram with negative sampling as a collator: tokenized text in, (centre, context, negatives) out.

As Mikolov et al., 2013 ("Distributed Representations of Words and Phrases and their Compositionality", NeurIPS) and
the reference `word2vec.c`, vectorised over the batch: tokens of count 0 (out of vocabulary, `[UNK]`, padding) are
dropped, frequent words subsampled (`keep_probability`), each surviving centre paired with the surviving words of its
example within its window, and each pair given `num_negatives` words drawn from the unigram distribution to the 3/4.

Legend: M kept tokens in the batch, W window, P (centre, context) pairs, K negatives per pair, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hfssl.augmentations.seeding import WorkerSeededGenerator
from hfssl.collators.padding import as_list_of_examples, check_return_tensors


def count_token_ids(input_ids: Iterable[Sequence[int]], vocab_size: int, ignore_ids: Iterable[int] = ()) -> torch.Tensor:
    """Count each vocabulary id over a tokenized corpus (the counts `DataCollatorForSkipGram` needs).

    Args:
        input_ids (iterable of sequences of `int`): e.g. `dataset["input_ids"]`.
        vocab_size (`int`): V, the length of the result.
        ignore_ids (iterable of `int`): ids whose count is set to 0 (e.g. `[UNK]` and `[PAD]`), so they are dropped.

    Returns:
        `torch.LongTensor` of shape (V,).
    """
    flat = np.fromiter((i for row in input_ids for i in row), dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
        raise ValueError(f"Token ids must lie in [0, {vocab_size}), got values in [{flat.min()}, {flat.max()}].")
    counts = torch.from_numpy(np.bincount(flat, minlength=vocab_size))
    counts[[i for i in ignore_ids if 0 <= i < vocab_size]] = 0
    return counts


@dataclass
class DataCollatorForSkipGram:
    """Turns tokenized examples into skip-gram training pairs with negatives (word2vec's SGNS, batched).

    Args:
        token_counts (`torch.Tensor` or sequence of `int`, of shape (V,)): corpus count of every id (see
            `count_token_ids`); ids of count 0 are dropped from the text.
        window (`int`, defaults to 5): the largest window (word2vec.c's and gensim's default).
        num_negatives (`int`, defaults to 5): negatives per pair (Mikolov et al. suggest 5-20 for small data).
        subsample_threshold (`float`, defaults to 1e-3): `t` of the subsampling of frequent words (word2vec.c's
            default; the paper uses 1e-5 on billions of words); 0 disables subsampling.
        noise_power (`float`, defaults to 0.75): the unigram distribution is raised to this power (Mikolov et al.).
        dynamic_window (`bool`, defaults to `True`): draw each centre's window from `{1, ..., window}` (which weights
            close contexts more).
        seed (`int`, *optional*): seed of the collator's generator (`hfssl.WorkerSeededGenerator`: distinct per
            DataLoader worker and per process); `None` seeds it from torch's global RNG at first use.

    Returns (from `__call__`):
        dict with `center_ids` (`torch.LongTensor` of shape (P,)), `context_ids` (P,) and `negative_ids` (P, K).
    """

    token_counts: Any
    window: int = 5
    num_negatives: int = 5
    subsample_threshold: float = 1e-3
    noise_power: float = 0.75
    dynamic_window: bool = True
    seed: int | None = None
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = WorkerSeededGenerator(self.seed)
        counts = torch.as_tensor(self.token_counts, dtype=torch.float64)
        if counts.ndim != 1 or len(counts) == 0 or bool((counts < 0).any()) or float(counts.sum()) <= 0:
            raise ValueError(
                f"token_counts must be a non-negative 1-D sequence with a positive total, got shape "
                f"{tuple(counts.shape)}; build it with hfssl.collators.skip_gram.count_token_ids(dataset['input_ids'], V)."
            )
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}.")
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {self.num_negatives}.")
        if self.subsample_threshold < 0:
            raise ValueError(f"subsample_threshold must be >= 0 (0 disables it), got {self.subsample_threshold}.")
        self._vocab_size = len(counts)
        self._in_vocabulary = counts > 0
        if self.subsample_threshold > 0:
            scaled = self.subsample_threshold * counts.sum()
            keep = (torch.sqrt(counts / scaled) + 1) * scaled / counts.clamp(min=1)
            self._keep_probability = keep.clamp(max=1.0).float().masked_fill(~self._in_vocabulary, 0.0)
        else:
            self._keep_probability = self._in_vocabulary.float()
        noise = counts.pow(self.noise_power).masked_fill(~self._in_vocabulary, 0.0)
        self._noise_cdf = (noise.cumsum(0) / noise.sum()).float()
        self._noise_cdf[-1] = 1.0

    @property
    def noise_distribution(self) -> torch.Tensor:
        """`torch.Tensor` of shape (V,): the probability of drawing each id as a negative."""
        return torch.diff(self._noise_cdf, prepend=torch.zeros(1))

    @property
    def keep_probability(self) -> torch.Tensor:
        """`torch.Tensor` of shape (V,): the probability that subsampling keeps an occurrence of each id, for a count
        `c` of `T` kept tokens `min(1, (sqrt(c / (t T)) + 1) * t T / c)` with `t = subsample_threshold` (word2vec.c's
        formula, also gensim's)."""
        return self._keep_probability

    def __call__(self, features: Any, return_tensors: str | None = None) -> dict[str, torch.Tensor]:
        check_return_tensors(return_tensors or "pt")
        examples = as_list_of_examples(features)
        rows = [np.asarray(example["input_ids"], dtype=np.int64).reshape(-1) for example in examples]
        lengths = torch.tensor([len(row) for row in rows])
        tokens = torch.from_numpy(np.concatenate(rows))
        if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= self._vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {self._vocab_size}) (the length of token_counts), got values in "
                f"[{int(tokens.min())}, {int(tokens.max())}]."
            )
        row_of = torch.repeat_interleave(torch.arange(len(rows)), lengths)
        center, context = self.pairs(tokens, row_of)
        return {"center_ids": center, "context_ids": context, "negative_ids": self.negatives(len(center))}

    def pairs(self, tokens: torch.Tensor, row_of: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Subsample, then pair each kept centre with its kept neighbours within its (dynamic) window.

        Args:
            tokens (`torch.LongTensor` of shape (N,)): the token ids of all examples, concatenated.
            row_of (`torch.LongTensor` of shape (N,)): the example each token belongs to.

        Returns:
            `(center_ids, context_ids)`, each `torch.LongTensor` of shape (P,).
        """
        keep = self.subsample(tokens)
        tokens, row_of = tokens[keep], row_of[keep]
        num_kept = len(tokens)
        if self.dynamic_window:
            reach = torch.randint(1, self.window + 1, (num_kept,), generator=self._rng.get())
        else:
            reach = torch.full((num_kept,), self.window)
        positions = torch.arange(num_kept)
        centers, contexts = [], []
        for offset in [*range(-self.window, 0), *range(1, self.window + 1)]:
            neighbour = positions + offset
            valid = (neighbour >= 0) & (neighbour < num_kept) & (reach >= abs(offset))
            neighbour = neighbour.clamp(0, max(num_kept - 1, 0))
            valid &= row_of[neighbour] == row_of
            centers.append(tokens[valid])
            contexts.append(tokens[neighbour[valid]])
        return torch.cat(centers), torch.cat(contexts)

    def subsample(self, tokens: torch.Tensor) -> torch.Tensor:
        """Which occurrences of `tokens` (`torch.LongTensor` of shape (N,)) survive, as a `torch.BoolTensor` of shape
        (N,): out-of-vocabulary ids never, others with `keep_probability`."""
        return torch.rand(tokens.shape, generator=self._rng.get()) < self._keep_probability[tokens]

    def negatives(self, num_pairs: int) -> torch.Tensor:
        """Draw `num_negatives` ids per pair from the unigram^`noise_power` distribution (`torch.LongTensor` of shape
        (P, K))."""
        uniform = torch.rand((num_pairs, self.num_negatives), generator=self._rng.get())
        return torch.searchsorted(self._noise_cdf, uniform, right=True).clamp(max=self._vocab_size - 1)


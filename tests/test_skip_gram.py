"""Tests of DataCollatorForSkipGram (word2vec's skip-gram pairs with negative sampling)."""

import math
import pickle

import pytest
import torch

from hfssl.collators.skip_gram import DataCollatorForSkipGram, count_token_ids


def naive_pairs(rows: list[list[int]], counts: torch.Tensor, window: int) -> list[tuple[int, int]]:
    """Per-pair reference: drop out-of-vocabulary ids, then pair every centre with all words within `window`."""
    pairs = []
    for row in rows:
        kept = [token for token in row if counts[token] > 0]
        for i, centre in enumerate(kept):
            for j in range(max(0, i - window), min(len(kept), i + window + 1)):
                if j != i:
                    pairs.append((centre, kept[j]))
    return pairs


def test_count_token_ids():
    counts = count_token_ids([[1, 2, 2], [3, 2, 0]], vocab_size=5, ignore_ids=[0])
    assert counts.tolist() == [0, 1, 3, 1, 0]
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\)"):
        count_token_ids([[7]], vocab_size=5)


def test_pairs_match_the_naive_reference_and_never_cross_examples():
    counts = torch.tensor([0, 0] + [10] * 30)  # ids 0 and 1 (pad, unk) are out of vocabulary
    rows = [[2, 3, 1, 4, 5, 6, 7], [8, 9, 0, 10], [11], [12, 13, 14, 15, 16, 17, 18, 19, 20]]
    collator = DataCollatorForSkipGram(counts, window=2, subsample_threshold=0.0, dynamic_window=False, seed=0)
    batch = collator([{"input_ids": row} for row in rows])
    got = sorted(zip(batch["center_ids"].tolist(), batch["context_ids"].tolist()))
    assert got == sorted(naive_pairs(rows, counts, window=2))
    assert batch["negative_ids"].shape == (len(got), 5)
    assert rows[0] == [2, 3, 1, 4, 5, 6, 7]  # inputs are not mutated


def test_dynamic_window_shrinks_as_word2vec():
    """Each centre's window b is uniform on {1..W}; the two neighbours at distance d are used iff b >= d, so over N
    interior centres the pairs at distance d number 2 * Binomial(N, (W - d + 1) / W): 5 sigma = 2 * 5 * sqrt(N p (1 - p)).
    """
    window, length = 5, 20000
    counts = torch.ones(length + 2, dtype=torch.long)
    collator = DataCollatorForSkipGram(counts, window=window, subsample_threshold=0.0, seed=3)
    center, context = collator.pairs(torch.arange(length), torch.zeros(length, dtype=torch.long))
    interior = (center >= window) & (center < length - window)
    distance = (context - center).abs()[interior]
    centres = length - 2 * window
    for d in range(1, window + 1):
        p = (window - d + 1) / window
        observed = int((distance == d).sum())
        assert abs(observed - 2 * centres * p) <= 2 * 5 * math.sqrt(centres * p * (1 - p)) + 1e-9, (d, observed)


def test_subsampling_keeps_words_with_word2vec_probability():
    """word2vec.c keeps an occurrence of a word of count c out of T with p = (sqrt(c/(tT)) + 1) tT / c. Over n
    occurrences the kept count is Binomial(n, p): 5 sigma = 5 sqrt(n p (1 - p))."""
    counts = torch.tensor([0, 0, 900_000, 90_000, 9_000, 10])
    threshold = 1e-3
    collator = DataCollatorForSkipGram(counts, subsample_threshold=threshold, seed=1)
    total = counts.sum().item()
    n = 50_000
    for token in (2, 3, 4, 5):
        c = counts[token].item()
        p = min(1.0, (math.sqrt(c / (threshold * total)) + 1) * threshold * total / c)
        assert collator.keep_probability[token].item() == pytest.approx(p, rel=1e-6)
        kept = int(collator.subsample(torch.full((n,), token)).sum())
        assert abs(kept - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9, (token, kept, n * p)
    assert not collator.subsample(torch.tensor([0, 1] * 100)).any()  # out-of-vocabulary ids never survive


def test_negatives_follow_the_unigram_power_distribution():
    """Each negative id is drawn with probability q_i = c_i^0.75 / sum_j c_j^0.75; over n draws the count of id i is
    Binomial(n, q_i): 5 sigma = 5 sqrt(n q_i (1 - q_i))."""
    counts = torch.tensor([0, 0, 1000, 100, 10, 1])
    collator = DataCollatorForSkipGram(counts, num_negatives=20, seed=2)
    negatives = collator.negatives(10_000).flatten()
    n = negatives.numel()
    expected = counts.double().pow(0.75)
    expected /= expected.sum()
    assert torch.allclose(collator.noise_distribution.double(), expected, atol=1e-6)
    observed = torch.bincount(negatives, minlength=len(counts)).double()
    assert observed[:2].sum() == 0
    bound = 5 * torch.sqrt(n * expected * (1 - expected))
    assert ((observed - n * expected).abs() <= bound + 1e-9).all(), (observed, n * expected)


def test_seeding_is_reproducible_and_differs_per_worker():
    counts = torch.full((50,), 5)
    rows = [list(range(2, 50))] * 4
    first = DataCollatorForSkipGram(counts, seed=7)(rows)
    again = DataCollatorForSkipGram(counts, seed=7)(rows)
    assert all(torch.equal(first[key], again[key]) for key in first)
    collator = pickle.loads(pickle.dumps(DataCollatorForSkipGram(counts, seed=7)))
    loader = torch.utils.data.DataLoader(rows, batch_size=2, num_workers=2, collate_fn=collator)
    batches = [batch["negative_ids"] for batch in loader]
    assert batches[0].shape != batches[1].shape or not torch.equal(batches[0], batches[1])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="token_counts must be a non-negative 1-D sequence"):
        DataCollatorForSkipGram(torch.zeros(5))
    with pytest.raises(ValueError, match="window must be at least 1"):
        DataCollatorForSkipGram(torch.ones(5), window=0)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 5\)"):
        DataCollatorForSkipGram(torch.ones(5))([[1, 9]])

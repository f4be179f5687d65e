"""Half-paragraph retrieval scores against a hand-computed case."""

import pytest
import torch

from hfssl.evaluation.retrieval import pair_retrieval_scores, split_into_halves


def test_split_into_halves_keeps_long_texts_only():
    queries, documents = split_into_halves(["a b c d e f", "short", "g h i j"], min_words=4)
    assert queries == ["a b c", "g h"] and documents == ["d e f", "i j"]
    with pytest.raises(ValueError, match="at least 2 texts"):
        split_into_halves(["one two three four"], min_words=4)


def test_pair_retrieval_scores_by_hand():
    vectors = {"q0": [1.0, 0.0], "q1": [0.0, 1.0], "q2": [1.0, 1.0],
               "d0": [1.0, 0.1], "d1": [1.0, 0.0], "d2": [1.0, 1.0]}

    def encode(texts):
        return torch.tensor([vectors[t] for t in texts])

    scores = pair_retrieval_scores(encode, ["q0", "q1", "q2"], ["d0", "d1", "d2"], ks=(1, 2), batch_size=2)
    # q0: d1 (cos 1) beats d0 -> rank 2; q1: d2 (0.71) and d0 (0.1) beat d1 (0) -> rank 3; q2: d2 -> rank 1.
    assert scores["recall@1"] == pytest.approx(1 / 3) and scores["recall@2"] == pytest.approx(2 / 3)
    assert scores["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)

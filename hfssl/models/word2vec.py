"""Word2Vec's skip-gram with negative sampling as a `PreTrainedModel` (Mikolov et al., 2013, "Distributed
Representations of Words and Phrases and their Compositionality", NeurIPS).

Legend: P (centre, context) pairs, K negatives per pair, D embedding dim, V vocabulary, Q queries.

The model holds word2vec.c's two tables: the input vectors (`syn0`, the word vectors one keeps) initialised uniform
in `[-0.5/D, 0.5/D)` and the output vectors (`syn1neg`) initialised at zero. The loss of a pair is
`-log sigmoid(u_c . v_o) - sum_k log sigmoid(-u_c . v_k)`, summed over the batch (see `Word2VecModel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class _RowDots(torch.autograd.Function):
    """`logits[p, k] = targets[p, k] . centers[p]`, with a backward written as two fast kernels: autograd's default
    backward of this batch of tiny matrix-vector products is a slow transposed batched product on CPU; here it is
    `bmm((P, 1, 1+K), (P, 1+K, D))` for the centres and a broadcast outer product for the targets.
    """

    @staticmethod
    def forward(ctx, targets: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(targets, centers)
        return torch.bmm(targets, centers[:, :, None]).squeeze(2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets, centers = ctx.saved_tensors
        grad_targets = grad[:, :, None] * centers[:, None, :] if ctx.needs_input_grad[0] else None
        grad_centers = torch.bmm(grad[:, None, :], targets).squeeze(1) if ctx.needs_input_grad[1] else None
        return grad_targets, grad_centers


class Word2VecConfig(PretrainedConfig):
    """Configuration of `Word2VecModel`.

    Args:
        vocab_size (`int`, defaults to 30000): V.
        embedding_dim (`int`, defaults to 100): D (gensim's default; Mikolov et al. use 300).
        sparse (`bool`, defaults to `True`): sparse gradients for the embeddings (use SGD or SparseAdam).
        pad_token_id (`int`, *optional*): kept for tokenizer compatibility; padding never reaches the model.
    """

    model_type = "hfssl_word2vec"

    def __init__(self, vocab_size: int = 30000, embedding_dim: int = 100, sparse: bool = True, **kwargs) -> None:
        if vocab_size < 1 or embedding_dim < 1:
            raise ValueError(f"vocab_size and embedding_dim must be positive, got {vocab_size} and {embedding_dim}.")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.sparse = sparse
        super().__init__(**kwargs)


@dataclass
class Word2VecOutput(ModelOutput):
    """Output of `Word2VecModel.forward`.

    Args:
        loss (`torch.Tensor` of shape ()): the negative-sampling loss summed over the pairs.
        positive_logits (`torch.Tensor` of shape (P,)): `u_c . v_o` for each pair.
        negative_logits (`torch.Tensor` of shape (P, K)): `u_c . v_k` for each negative.
    """

    loss: torch.Tensor | None = None
    positive_logits: torch.Tensor | None = None
    negative_logits: torch.Tensor | None = None


class Word2VecModel(PreTrainedModel):
    """Skip-gram with negative sampling; feed it `DataCollatorForSkipGram` batches, query the learned vectors with
    `most_similar` and `analogy`.

    The loss is summed over pairs, so a step adds up every pair's update as word2vec.c applies them one by one (and the
    learning rate means what it means in word2vec.c and gensim: 0.025 decaying linearly): the same step exactly when
    no word repeats in the batch, to first order in the learning rate when words do. Keep steps at a few thousand
    pairs: once a word collects so many summed updates that `lr * count * |u|^2` passes a few units, SGD overshoots
    and diverges (lower the learning rate, or use smaller batches). With `sparse=True` an SGD step touches only the
    rows in the batch.
    """

    config_class = Word2VecConfig
    base_model_prefix = "word2vec"
    main_input_name = "center_ids"

    def __init__(self, config: Word2VecConfig) -> None:
        super().__init__(config)
        self.input_embeddings = torch.nn.Embedding(config.vocab_size, config.embedding_dim, sparse=config.sparse)
        self.output_embeddings = torch.nn.Embedding(config.vocab_size, config.embedding_dim, sparse=config.sparse)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        if module is self.input_embeddings:
            bound = 0.5 / self.config.embedding_dim
            module.weight.uniform_(-bound, bound)
        elif module is self.output_embeddings:
            module.weight.zero_()

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.input_embeddings

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.input_embeddings = value

    def forward(
        self, center_ids: torch.Tensor, context_ids: torch.Tensor, negative_ids: torch.Tensor, **kwargs
    ) -> Word2VecOutput:
        """Negative-sampling loss of a batch of pairs, as a `Word2VecOutput`.

        Args:
            center_ids (`torch.LongTensor` of shape (P,)), context_ids (`torch.LongTensor` of shape (P,)): the pairs.
            negative_ids (`torch.LongTensor` of shape (P, K)): noise words; a negative equal to its pair's context is
                ignored (as word2vec.c and gensim skip it).
        """
        if center_ids.shape != context_ids.shape or negative_ids.shape[:1] != center_ids.shape:
            raise ValueError(
                f"Expected center_ids (P,), context_ids (P,) and negative_ids (P, K); got shapes "
                f"{tuple(center_ids.shape)}, {tuple(context_ids.shape)} and {tuple(negative_ids.shape)}."
            )
        centers = self.input_embeddings(center_ids)  # (P, D)
        targets = self.output_embeddings(torch.cat([context_ids[:, None], negative_ids], dim=1))  # (P, 1+K, D)
        logits = _RowDots.apply(targets, centers)  # (P, 1+K)
        positive_logits, negative_logits = logits[:, 0], logits[:, 1:]
        negative_weight = (negative_ids != context_ids[:, None]).to(logits.dtype)
        loss = -F.logsigmoid(positive_logits).sum() - (F.logsigmoid(-negative_logits) * negative_weight).sum()
        return Word2VecOutput(loss=loss, positive_logits=positive_logits, negative_logits=negative_logits)

    def word_vectors(self, normalize: bool = True) -> torch.Tensor:
        """The input vectors (word2vec's `syn0`) `(V, D)`, L2-normalised by default."""
        vectors = self.input_embeddings.weight.detach()
        return F.normalize(vectors, dim=1) if normalize else vectors

    @torch.no_grad()
    def most_similar(
        self, queries: torch.Tensor, k: int = 10, exclude: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Cosine nearest neighbours.

        Args:
            queries (`torch.LongTensor` of shape (Q,) or `torch.Tensor` of shape (Q, D)): word ids or vectors.
            k (`int`, defaults to 10): neighbours per query.
            exclude (`torch.LongTensor` of shape (Q, E), *optional*): ids never returned for each query (by default,
                a word-id query excludes itself).
            allowed (`torch.BoolTensor` of shape (V,), *optional*): only these ids may be returned (e.g. the ids of
                real words, without padding and `[UNK]`).

        Returns:
            `(scores, ids)`, both of shape (Q, k), most similar first.
        """
        vectors = self.word_vectors()
        if queries.dtype in (torch.long, torch.int):
            if exclude is None:
                exclude = queries[:, None]
            queries = vectors[queries]
        scores = F.normalize(queries.to(vectors.dtype), dim=1) @ vectors.T  # (Q, V)
        if allowed is not None:
            scores = scores.masked_fill(~allowed.to(scores.device)[None, :], float("-inf"))
        if exclude is not None:
            scores = scores.scatter(1, exclude, float("-inf"))
        return scores.topk(min(k, scores.shape[1]), dim=1)

    @torch.no_grad()
    def analogy(
        self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, k: int = 1, allowed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer "a is to b as c is to ?" with 3CosAdd: the words nearest `b - a + c`, excluding a, b and c.

        Args:
            a (`torch.LongTensor` of shape (Q,)), b (`torch.LongTensor` of shape (Q,)), c (`torch.LongTensor` of
                shape (Q,)): word ids.
            k (`int`, defaults to 1): answers per query.
            allowed (`torch.BoolTensor` of shape (V,), *optional*): only these ids may be returned.

        Returns:
            `(scores, ids)`, both of shape (Q, k).
        """
        vectors = self.word_vectors()
        target = vectors[b] - vectors[a] + vectors[c]
        return self.most_similar(target, k, exclude=torch.stack([a, b, c], dim=1), allowed=allowed)


AutoConfig.register("hfssl_word2vec", Word2VecConfig)
AutoModel.register(Word2VecConfig, Word2VecModel)

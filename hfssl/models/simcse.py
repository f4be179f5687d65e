"""SimCSE, unsupervised and supervised (Gao et al., 2021, "SimCSE: Simple Contrastive Learning of Sentence
Embeddings", EMNLP).

Legend: B batch of sentences, L tokens, H hidden size.

Every sentence goes through the encoder twice in one pass of 2B rows; the two dropout masks make the two views. The
[CLS] state passes an MLP (dense + tanh, used in training only, as the paper's unsupervised model) and InfoNCE pulls
the two views of a sentence together against the other sentences of the (global) batch.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from hfssl.distributed import gather_with_grad, is_distributed, other_processes
from hfssl.losses.info_nce import info_nce_loss
from hfssl.models.base import SSLPreTrainedModel, check_config_dict, transformers_model
from hfssl.models.outputs import SSLModelOutput, pair_cosine_metrics


class SimCSEConfig(PretrainedConfig):
    """Configuration of `SimCSEModel`.

    Args:
        encoder_config (`dict`): the text encoder's transformers config in `to_dict()` form (e.g. a BERT's), from which
            the encoder is built offline; `SimCSEModel.from_encoder` fills it in.
        temperature (`float`, defaults to 0.05): Gao et al.'s value.
        gather_distributed (`bool`, defaults to `True`): use the other processes' sentences as negatives.
    """

    model_type = "hfssl_simcse"

    encoder_config: dict | None = None
    temperature: float = 0.05
    gather_distributed: bool = True

    def __post_init__(self, **kwargs) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (SimCSE uses 0.05).")
        check_config_dict("encoder_config", self.encoder_config)
        super().__post_init__(**kwargs)


class SimCSEModel(SSLPreTrainedModel):
    """Unsupervised SimCSE: a transformers text encoder, an MLP over [CLS], and InfoNCE between two dropout views."""

    config_class = SimCSEConfig
    base_model_prefix = "simcse"
    main_input_name = "input_ids"

    def __init__(self, config: SimCSEConfig) -> None:
        super().__init__(config)
        if config.encoder_config is None:
            raise ValueError(
                "SimCSEConfig.encoder_config is required; build the model with SimCSEModel.from_encoder(encoder)."
            )
        self.encoder = transformers_model(None, config.encoder_config, pretrained=False)
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # BERT's pooler is unused; unused parameters upset DistributedDataParallel
        hidden = self.encoder.config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.post_init()

    @classmethod
    def from_encoder(cls, encoder: PreTrainedModel, **config_kwargs) -> SimCSEModel:
        """Wrap an existing encoder (e.g. `AutoModel.from_pretrained("bert-base-uncased")`), keeping its weights."""
        model = cls(SimCSEConfig(encoder_config=encoder.config.to_dict(), **config_kwargs))
        missing, unexpected = model.encoder.load_state_dict(encoder.state_dict(), strict=False)
        if missing or [key for key in unexpected if not key.startswith("pooler.")]:
            raise ValueError(f"The encoder's weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}.")
        return model

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Sentence embeddings `(B, H)`: the [CLS] state, without the training MLP (the paper's unsupervised
        evaluation)."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state[:, 0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        positive_input_ids: torch.Tensor | None = None,
        positive_attention_mask: torch.Tensor | None = None,
        negative_input_ids: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SSLModelOutput:
        """InfoNCE between two views of each sentence.

        Unsupervised (only `input_ids`): the two views are two dropout masks of the same sentence. Supervised
        (Gao et al., section 4): `positive_input_ids` holds each sentence's positive (e.g. an NLI entailment) and
        the optional `negative_input_ids` a hard negative (e.g. a contradiction); every query is contrasted with
        the other positives and with all hard negatives of the (global) batch.

        Args:
            input_ids (`torch.LongTensor` of shape (B, L)), attention_mask (`torch.LongTensor` of shape (B, L),
                *optional*), token_type_ids (`torch.LongTensor` of shape (B, L), *optional*): a padded batch.
            positive_input_ids, positive_attention_mask (`torch.LongTensor` of shape (B, L'), *optional*): positives.
            negative_input_ids, negative_attention_mask (`torch.LongTensor` of shape (B, L''), *optional*): hard
                negatives; need positives.

        Returns:
            `SSLModelOutput` with `loss`, `embeddings` (B, H) of the first view and metrics
            `contrastive/positive_cosine`, `contrastive/negative_cosine`.
        """
        if input_ids.ndim != 2 or input_ids.shape[0] < 2:
            raise ValueError(f"SimCSE needs input_ids (B, L) of B >= 2 sentences, got shape {tuple(input_ids.shape)}.")
        if negative_input_ids is not None and positive_input_ids is None:
            raise ValueError("negative_input_ids (hard negatives) need positive_input_ids: pass (sentence, positive, "
                             "negative) triplets, or only sentences for unsupervised SimCSE.")
        batch_size = input_ids.shape[0]
        hard_negatives = None
        if positive_input_ids is None:
            extra = {"token_type_ids": token_type_ids.repeat(2, 1)} if token_type_ids is not None else {}
            mask = attention_mask.repeat(2, 1) if attention_mask is not None else None
            z1, z2 = self.mlp(self.encode(input_ids.repeat(2, 1), mask, **extra)).chunk(2)  # two dropout masks
        else:
            if positive_input_ids.shape[0] != batch_size:
                raise ValueError(f"Got {batch_size} sentences but {positive_input_ids.shape[0]} positives.")
            z1 = self.mlp(self.encode(input_ids, attention_mask))
            z2 = self.mlp(self.encode(positive_input_ids, positive_attention_mask))
            if negative_input_ids is not None:
                hard_negatives = gather_with_grad(self.mlp(self.encode(negative_input_ids, negative_attention_mask)))
        negatives = None
        if self.config.gather_distributed and is_distributed():
            negatives = other_processes(gather_with_grad(z2), batch_size)
        if hard_negatives is not None:
            negatives = hard_negatives if negatives is None else torch.cat([negatives, hard_negatives])
        loss = info_nce_loss(z1, z2, self.config.temperature, negatives=negatives, in_batch_negatives=True)
        return SSLModelOutput(loss=loss, embeddings=z1.detach(), metrics=pair_cosine_metrics(z1, z2))


AutoConfig.register("hfssl_simcse", SimCSEConfig)
AutoModel.register(SimCSEConfig, SimCSEModel)

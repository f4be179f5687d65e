"""A CLIP-style dual encoder (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", ICML): any image backbone and any text encoder, each followed by a linear projection into one
embedding space, trained with CLIP's symmetric contrastive loss or SigLIP's sigmoid loss (Zhai et al. 2023).

Legend: B images, K captions per image, L tokens, D_i / D_t tower widths, P projection dim.

The image tower is an hfssl `Backbone` pooled to (B, D_i), the text tower any transformers `AutoModel` pooled to
(B, D_t), the projections bias-free linear maps to P (CLIP). The logit scale is learnt as its log and clamped in the
forward pass (CLIP clips the parameter; the clamp also stops its gradient there). With K captions per image
(`input_ids` of K * B rows, image-major), the loss is the mean of the K losses between the images and their j-th
captions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

from hfssl.losses.clip import (
    CLIP_LOGIT_SCALE_INIT,
    CLIP_LOGIT_SCALE_MAX,
    SIGLIP_LOGIT_BIAS_INIT,
    SIGLIP_LOGIT_SCALE_INIT,
    clip_loss,
    siglip_loss,
)
from hfssl.models.backbone import SSLBackboneConfig, backbone_from_config
from hfssl.models.base import SSLPreTrainedModel, check_config_dict, describe, transformers_model
from hfssl.models.outputs import SSLModelOutput, pair_cosine_metrics

LOSSES = ("clip", "siglip")
TEXT_POOLINGS = ("cls", "mean", "last")


class DualEncoderConfig(SSLBackboneConfig):
    """Configuration of `DualEncoderModel`: image tower (`SSLBackboneConfig`'s fields), text tower, projections, loss.

    Args:
        text_model_config (`dict`, *optional*): the text encoder's transformers config in `to_dict()` form (e.g. a
            BERT's), built offline with `AutoModel.from_config`. Filled in from `text_model_name` when unset.
        text_model_name (`str`, *optional*): a Hub id or local folder of the text encoder, used when
            `text_model_config` is unset.
        text_pretrained (`bool`, defaults to `False`): load `text_model_name`'s weights. Reset to `False` once built.
        text_pooling (`str`, defaults to `"cls"`): `"cls"` (first token), `"mean"` (mean over the attention mask) or
            `"last"` (last attended token, for causal encoders as CLIP's text transformer).
        projection_dim (`int`, defaults to 512): the shared embedding dimension (CLIP ViT-B: 512).
        loss (`str`, defaults to `"clip"`): `"clip"` (symmetric InfoNCE) or `"siglip"` (sigmoid).
        logit_scale_init (`float`, *optional*): initial log of the logit scale; `None` takes the paper's value
            (CLIP: log(1 / 0.07); SigLIP: log 10).
        logit_scale_max (`float`, defaults to log(100)): CLIP's clamp of the log logit scale.
        logit_bias_init (`float`, defaults to -10): SigLIP's initial bias (unused by the CLIP loss).
        learnable_logit_scale (`bool`, defaults to `True`): learn the scale (and SigLIP's bias), or keep them fixed.
        gather_distributed (`bool`, defaults to `True`): contrast against the other processes' pairs too.
    """

    model_type = "hfssl_dual_encoder"

    text_model_config: dict | None = None
    text_model_name: str | None = None
    text_pretrained: bool = False
    text_pooling: str = "cls"
    projection_dim: int = 512
    loss: str = "clip"
    logit_scale_init: float | None = None
    logit_scale_max: float = CLIP_LOGIT_SCALE_MAX
    logit_bias_init: float = SIGLIP_LOGIT_BIAS_INIT
    learnable_logit_scale: bool = True
    gather_distributed: bool = True

    def __post_init__(self, **kwargs) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not supported; choose one of {LOSSES} (CLIP or SigLIP).")
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(
                f"text_pooling={self.text_pooling!r} is not supported; choose one of {TEXT_POOLINGS} ('cls' for "
                "BERT-like encoders, 'last' for causal ones)."
            )
        if self.projection_dim < 1:
            raise ValueError(f"projection_dim={self.projection_dim} must be a positive dimension (CLIP: 512).")
        check_config_dict("text_model_config", self.text_model_config)
        if self.logit_scale_init is None:
            self.logit_scale_init = CLIP_LOGIT_SCALE_INIT if self.loss == "clip" else SIGLIP_LOGIT_SCALE_INIT
        super().__post_init__(**kwargs)


def text_encoder_from_config(config: DualEncoderConfig) -> PreTrainedModel:
    """Build the text tower a config describes, then record its config so `from_pretrained` rebuilds it offline."""
    if config.text_model_config is None and config.text_model_name is None:
        raise ValueError(
            "DualEncoderConfig needs a text tower: pass text_model_config (e.g. BertConfig(...).to_dict()) or "
            "text_model_name (a Hub id or folder, with text_pretrained=True to load its weights)."
        )
    encoder = transformers_model(config.text_model_name, config.text_model_config, config.text_pretrained)
    config.text_model_config = encoder.config.to_dict()
    config.text_pretrained = False
    return encoder


class DualEncoderModel(SSLPreTrainedModel):
    """CLIP-style image and text towers with projections and a learnt logit scale (see the module docstring).

    `get_image_features` / `get_text_features` give the projected embeddings (as transformers' `CLIPModel`);
    `hfssl.evaluation.zero_shot` uses them for zero-shot classification and retrieval; `hfssl.export.save_towers`
    exports each tower in its own library's format.
    """

    config_class = DualEncoderConfig
    base_model_prefix = "dual_encoder"

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__(config)
        self.image_encoder = backbone_from_config(config)
        self.text_encoder = text_encoder_from_config(config)
        pooler = getattr(self.text_encoder, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)  # unused: frozen, so every trainable parameter gets a gradient (DDP)
        self.image_projection = nn.Linear(self.image_encoder.feature_dim, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_encoder.config.hidden_size, config.projection_dim, bias=False)
        learnable = config.learnable_logit_scale
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)), requires_grad=learnable)
        self.logit_bias = None
        if config.loss == "siglip":
            self.logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias_init)), requires_grad=learnable)
        self.post_init()

    def current_logit_scale(self) -> torch.Tensor:
        """`exp` of the learnt log logit scale, clamped at `config.logit_scale_max` (CLIP: 100)."""
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings `(B, P)`, not normalised, of images `pixel_values` (`torch.Tensor` of shape
        `(B, C, H, W)`)."""
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            raise ValueError(
                f"DualEncoderModel expects pixel_values of shape (B, C, H, W); received {describe(pixel_values)}. Use "
                "DataCollatorForImageText, whose image views are single tensors."
            )
        return self.image_projection(self.image_encoder(pixel_values))

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Projected text embeddings `(B, P)`, not normalised, pooled as `config.text_pooling` says.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`), attention_mask (`torch.LongTensor` of shape `(B, L)`,
                *optional*): a padded batch of captions; other keyword arguments go to the text encoder.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooling = self.config.text_pooling
        if pooling == "cls":
            pooled = hidden[:, 0]
        elif pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:  # last attended token (right padding)
            last = attention_mask.sum(1).clamp(min=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.text_projection(pooled)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The embeddings `(1 + K, B, P)` of the images, then of each set of j-th captions, of a `batch` of
        `pixel_values` (B, C, H, W), `input_ids` and `attention_mask` (K * B, L), row i * K + j holding caption j of
        image i: the split `SSLTrainer`'s cached-gradient step needs."""
        images = self.get_image_features(batch["pixel_values"])
        batch_size, input_ids = images.shape[0], batch["input_ids"]
        if input_ids.ndim != 2 or input_ids.shape[0] % batch_size != 0:
            raise ValueError(
                f"Got {batch_size} images but input_ids of shape {tuple(input_ids.shape)}; pass K * B captions "
                "(K * B, L), image-major (row i * K + j: caption j of image i), as DataCollatorForImageText does."
            )
        extra = {key: batch[key] for key in ("token_type_ids",) if batch.get(key) is not None}
        texts = self.get_text_features(input_ids, batch.get("attention_mask"), **extra)
        texts = texts.view(batch_size, -1, texts.shape[-1]).transpose(0, 1)  # (K, B, P)
        return torch.cat([images.unsqueeze(0), texts])

    def loss_from_embeddings(self, embeddings: torch.Tensor, targets: None = None) -> SSLModelOutput:
        """The contrastive loss of `embed`'s `embeddings` (1 + K, B, P) (images, then the K sets of captions), with the
        other processes' pairs when training distributed; `targets` is unused (no teacher).

        Returns:
            `SSLModelOutput` with `loss` (the mean over the K caption sets), `embeddings` (B, P) of the images and
            metrics `contrastive/logit_scale`, `contrastive/positive_cosine`, `contrastive/negative_cosine` (and
            `contrastive/logit_bias` for SigLIP).
        """
        images, captions = embeddings[0], embeddings[1:]
        scale, gather = self.current_logit_scale(), self.config.gather_distributed
        if self.config.loss == "clip":
            losses = [clip_loss(images, texts, scale, gather) for texts in captions]
        else:
            losses = [siglip_loss(images, texts, scale, self.logit_bias, gather) for texts in captions]
        metrics = {"contrastive/logit_scale": scale.detach(), **pair_cosine_metrics(images, captions[0])}
        if self.logit_bias is not None:
            metrics["contrastive/logit_bias"] = self.logit_bias.detach()
        return SSLModelOutput(loss=torch.stack(losses).mean(), embeddings=images.detach(), metrics=metrics)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SSLModelOutput:
        """The contrastive loss of a batch of images and their captions: `loss_from_embeddings(embed(batch))`.

        Args:
            pixel_values (`torch.Tensor` of shape `(B, C, H, W)`): the images.
            input_ids, attention_mask, token_type_ids (`torch.LongTensor` of shape `(K * B, L)`): the captions,
                image-major.
            labels (`torch.Tensor` of shape `(B,)`, *optional*): ignored (class labels passed through by collators).
        """
        batch = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}  # fmt: skip
        return self.loss_from_embeddings(self.embed(batch))


AutoConfig.register(DualEncoderConfig.model_type, DualEncoderConfig, exist_ok=True)
AutoModel.register(DualEncoderConfig, DualEncoderModel, exist_ok=True)

"""Image-text contrastive losses: CLIP's symmetric InfoNCE (Radford et al. 2021, "Learning Transferable Visual Models
From Natural Language Supervision", ICML) and SigLIP's pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for
Language Image Pre-Training", ICCV).

Legend: B pairs on this process, W processes, D embedding dim.

Image i and text i are the only positive pair; every other text of the *global* batch (all W processes) is a negative
of image i, and every other image a negative of text i. The other processes' embeddings are gathered with gradient
(`hfssl.distributed.gather_with_grad`), so DDP's mean over processes gives exactly the gradient of the global-batch
loss (the transformers example `run_clip.py` uses each device's own batch only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hfssl.distributed import gather_with_grad, is_distributed, rank

CLIP_LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP: temperature 0.07, learnt as log(1 / temperature)
CLIP_LOGIT_SCALE_MAX = math.log(100.0)  # CLIP clips the logit scale at 100 "to prevent training instability"
SIGLIP_LOGIT_SCALE_INIT = math.log(10.0)  # SigLIP: t' = log 10
SIGLIP_LOGIT_BIAS_INIT = -10.0  # SigLIP: b = -10, so that the loss starts near the prior of rare positives


def _normalized_pairs(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if image_embeddings.ndim != 2 or image_embeddings.shape != text_embeddings.shape:
        raise ValueError(
            f"{name} expects image and text embeddings of the same shape (B, D), row i of each forming a pair; got "
            f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}. Project both towers to the same "
            "dimension and pass one text per image."
        )
    return F.normalize(image_embeddings, dim=1), F.normalize(text_embeddings, dim=1)


def clip_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    logit_scale: float | torch.Tensor = 1 / 0.07,
    gather_distributed: bool = True,
) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the image-text similarity matrix of the global batch.

    `logits = logit_scale * normalize(images) @ normalize(texts).T`; the loss is the mean of the cross-entropy of
    each image over all texts and of each text over all images, the matching one being the target (CLIP's
    pseudocode, figure 3). `logit_scale` is `exp` of the learnt parameter, which CLIP starts at `log(1 / 0.07)` and
    clamps at `log(100)` (`CLIP_LOGIT_SCALE_INIT`, `CLIP_LOGIT_SCALE_MAX`).

    Args:
        image_embeddings (`torch.Tensor` of shape `(B, D)`): this process's image projections (need not be normalised).
        text_embeddings (`torch.Tensor` of shape `(B, D)`): the text projections, row i describing image i.
        logit_scale (`float` or `torch.Tensor`, defaults to 1 / 0.07): the inverse temperature (a scalar tensor to
            learn it).
        gather_distributed (`bool`, defaults to `True`): contrast against the other processes' pairs too.

    Returns:
        `torch.Tensor` (scalar): on W processes, this process's share (the mean over its B images and B texts) of the
        global-batch loss; the mean over processes is the loss of one process holding the W * B pairs.
    """
    images, texts = _normalized_pairs(image_embeddings, text_embeddings, "clip_loss")
    batch_size, distributed = images.shape[0], gather_distributed and is_distributed()
    all_images, all_texts = (gather_with_grad(images), gather_with_grad(texts)) if distributed else (images, texts)
    targets = torch.arange(batch_size, device=images.device) + (rank() * batch_size if distributed else 0)
    logits_per_image = logit_scale * images @ all_texts.T  # (B, W * B)
    logits_per_text = logit_scale * texts @ all_images.T  # (B, W * B)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2


def siglip_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    logit_scale: float | torch.Tensor = 10.0,
    logit_bias: float | torch.Tensor = -10.0,
    gather_distributed: bool = True,
) -> torch.Tensor:
    """SigLIP's sigmoid loss: an independent binary classification of every image-text pair of the global batch.

    `loss = -1/|B| sum_i sum_j log sigmoid(z_ij (t x_i . y_j + b))` with `z_ij = 1` for matching pairs and -1
    otherwise (SigLIP, algorithm 1), `|B|` the global batch, `t = exp(t')` learnt from `t' = log 10` and `b` learnt
    from -10 (`SIGLIP_LOGIT_SCALE_INIT`, `SIGLIP_LOGIT_BIAS_INIT`). With several processes, the images of this
    process meet the texts of every process one process-block at a time (the paper's chunked implementation, with
    the blocks all-gathered instead of passed round a ring), so the largest logit matrix is B x B.

    Args:
        image_embeddings (`torch.Tensor` of shape `(B, D)`): this process's image projections (need not be normalised).
        text_embeddings (`torch.Tensor` of shape `(B, D)`): the text projections, row i describing image i.
        logit_scale (`float` or `torch.Tensor`, defaults to 10): `t`, the exp of the learnt `t'`.
        logit_bias (`float` or `torch.Tensor`, defaults to -10): `b`.
        gather_distributed (`bool`, defaults to `True`): use the other processes' texts as negatives too.

    Returns:
        `torch.Tensor` (scalar): the sum over this process's images of their losses against all texts, divided by B;
        the mean over processes is the loss of one process holding the W * B pairs.
    """
    images, texts = _normalized_pairs(image_embeddings, text_embeddings, "siglip_loss")
    batch_size = images.shape[0]
    own, blocks = 0, [texts]
    if gather_distributed and is_distributed():
        own, blocks = rank(), list(gather_with_grad(texts).split(batch_size))
    negative_signs = -torch.ones(batch_size, batch_size, device=images.device, dtype=images.dtype)
    positive_signs = negative_signs + 2 * torch.eye(batch_size, device=images.device, dtype=images.dtype)
    total = images.new_zeros(())
    for block_rank, block in enumerate(blocks):
        logits = logit_scale * images @ block.T + logit_bias  # (B, B)
        signs = positive_signs if block_rank == own else negative_signs
        total = total - F.logsigmoid(signs * logits).sum()
    return total / batch_size

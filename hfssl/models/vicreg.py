"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR).

Legend: B batch, C channels, H and W image size, D feature dim, P expander dim.

One backbone and expander embed both views; the loss (`hfssl.losses.vicreg`) makes the two embeddings of an image
agree (invariance), keeps every dimension's std above 1 (variance) and decorrelates the dimensions (covariance),
over the global batch of all processes.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel

from hfssl.losses.vicreg import vicreg_loss
from hfssl.models.base import check_positive
from hfssl.models.backbone import SSLBackboneConfig
from hfssl.models.outputs import SSLModelOutput
from hfssl.models.two_view import TwoViewProjectionModel


class VICRegConfig(SSLBackboneConfig):
    """Configuration of `VICRegModel`; the defaults are the paper's (Bardes et al. 2022, section 4.1).

    Args:
        projection_hidden_dim (`int`, defaults to 8192): hidden width of the expander.
        projection_dim (`int`, defaults to 8192): the embedding dimension P.
        projection_layers (`int`, defaults to 3): linear layers of the expander.
        sim_coeff (`float`, defaults to 25.0): lambda, the invariance weight.
        std_coeff (`float`, defaults to 25.0): mu, the variance weight.
        cov_coeff (`float`, defaults to 1.0): nu, the covariance weight.
        eps (`float`, defaults to 1e-4): added to the variance before its square root.
        gamma (`float`, defaults to 1.0): the target std of every dimension.
        gather_distributed (`bool`, defaults to `True`): statistics over the global batch of all processes.
    """

    model_type = "hfssl_vicreg"

    projection_hidden_dim: int = 8192
    projection_dim: int = 8192
    projection_layers: int = 3
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    eps: float = 1e-4
    gamma: float = 1.0
    gather_distributed: bool = True

    def __post_init__(self, **kwargs) -> None:
        check_positive("VICReg", self, "projection_hidden_dim", "projection_dim", "projection_layers")
        coefficients = {"sim_coeff": self.sim_coeff, "std_coeff": self.std_coeff, "cov_coeff": self.cov_coeff}
        negative = {name: value for name, value in coefficients.items() if value < 0}
        if negative:
            raise ValueError(f"VICReg coefficients must be >= 0; got {negative} (paper: 25, 25, 1).")
        if self.eps <= 0 or self.gamma <= 0:
            raise ValueError(f"eps={self.eps} and gamma={self.gamma} must be > 0 (paper: 1e-4 and 1).")
        super().__post_init__(**kwargs)


class VICRegModel(TwoViewProjectionModel):
    """VICReg: a backbone and a wide expander trained by variance-invariance-covariance regularisation."""

    method_name = "VICReg"
    paper_views = "byol"

    config_class = VICRegConfig
    base_model_prefix = "vicreg"

    def loss_from_embeddings(self, embeddings: torch.Tensor, targets: None = None) -> SSLModelOutput:
        """The VICReg loss of `embed`'s `embeddings` (2, B, P), with the statistics of the global batch; `targets` is
        unused (no teacher).

        Returns:
            `SSLModelOutput` with `loss`, `embeddings` (B, P) (view 1) and the unweighted terms as metrics
            `vicreg/invariance`, `vicreg/variance`, `vicreg/covariance`.
        """
        z1, z2 = embeddings.unbind(0)
        config = self.config
        terms = vicreg_loss(
            z1, z2, config.sim_coeff, config.std_coeff, config.cov_coeff, config.eps, config.gamma,
            config.gather_distributed,
        )  # fmt: skip
        unweighted = ("invariance", "variance", "covariance")
        metrics = {f"vicreg/{term}": getattr(terms, term).detach() for term in unweighted}
        return SSLModelOutput(loss=terms.loss, embeddings=z1.detach(), metrics=metrics)


AutoConfig.register(VICRegConfig.model_type, VICRegConfig, exist_ok=True)
AutoModel.register(VICRegConfig, VICRegModel, exist_ok=True)

"""LARS, the layer-wise adaptive rate scaling optimiser of You et al. 2017 ("Large Batch Training of
Convolutional Networks"), as used by SimCLR, BYOL and MoCo v3.

This follows the MoCo v3 / BYOL implementation: SGD with momentum whose update of each weight matrix is scaled by
the trust ratio `eta * ||w|| / ||g + weight_decay * w||`; one-dimensional parameters (biases, norm scales) and
scalars skip both the weight decay and the adaptation, as in SimCLR (appendix B.1).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LARS(torch.optim.Optimizer):
    """LARS (SGD + momentum + layer-wise trust ratio).

    Args:
        params (iterable of parameters or parameter groups): what to optimise.
        lr (`float`): the learning rate (SimCLR: 0.3 * batch_size / 256 with batch >= 256).
        momentum (`float`, defaults to 0.9): SGD momentum (SimCLR, MoCo v3).
        weight_decay (`float`, defaults to 1e-6): SimCLR's value for LARS (MoCo v3 uses 1e-6 too for ResNet).
        trust_coefficient (`float`, defaults to 0.001): the `eta` of You et al.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict], lr: float, momentum: float = 0.9,
                 weight_decay: float = 1e-6, trust_coefficient: float = 0.001) -> None:
        if lr <= 0:
            raise ValueError(f"LARS needs lr > 0, got lr={lr}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS needs 0 <= momentum < 1, got momentum={momentum}.")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "trust_coefficient": trust_coefficient})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim.Optimizer.step)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                update = parameter.grad
                if parameter.ndim > 1:
                    update = update.add(parameter, alpha=group["weight_decay"])
                    parameter_norm, update_norm = torch.linalg.vector_norm(parameter), torch.linalg.vector_norm(update)
                    trust = torch.where((parameter_norm > 0) & (update_norm > 0),
                                        group["trust_coefficient"] * parameter_norm / update_norm, 1.0)
                    update = update.mul(trust)
                state = self.state[parameter]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(parameter)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                parameter.add_(buffer, alpha=-group["lr"])
        return loss

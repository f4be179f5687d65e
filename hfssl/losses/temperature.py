"""A learnable softmax temperature, parametrised by its logarithm as in CLIP (Radford et al. 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnableTemperature(nn.Module):
    """A positive scalar temperature learnt through `log(temperature)` and clamped to `[minimum, maximum]`.

    CLIP learns `log(1 / temperature)` from 0.07 and clips it so the logit scale stays under 100; this module
    learns `log(temperature)` with the same effect (`minimum=0.01`).

    Args:
        initial (`float`, defaults to 0.07): the starting temperature (CLIP's value).
        minimum (`float`, defaults to 0.01): the lower clamp.
        maximum (`float`, defaults to 1.0): the upper clamp.
    """

    def __init__(self, initial: float = 0.07, minimum: float = 0.01, maximum: float = 1.0) -> None:
        super().__init__()
        if not 0 < minimum <= initial <= maximum:
            raise ValueError(
                f"LearnableTemperature needs 0 < minimum <= initial <= maximum; got minimum={minimum}, "
                f"initial={initial}, maximum={maximum}."
            )
        self.minimum, self.maximum = minimum, maximum
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> torch.Tensor:
        """Returns the temperature (`torch.Tensor`, scalar) with its gradient."""
        return self.log_temperature.exp().clamp(self.minimum, self.maximum)

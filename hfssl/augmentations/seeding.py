"""A `torch.Generator` that a collator owns, seeded once per process and distinct per DataLoader worker."""

from __future__ import annotations

import os

import torch
from torch.utils.data import get_worker_info

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant used to spread seeds


class WorkerSeededGenerator:
    """Lazily creates the collator's `torch.Generator`, re-seeding it inside each DataLoader worker.

    - Main process (`num_workers=0`): seeded with `seed` (or from torch's global RNG when `seed` is None), so
      one collator yields one reproducible stream of batches.
    - DataLoader worker: seeded from `seed`, the worker id and the DataLoader's base seed
      (`get_worker_info().seed`, drawn from torch's global RNG, which `Trainer` seeds). Workers thus differ
      from each other and from one epoch to the next, and a run with the same seeds repeats exactly.
    - Distributed ranks (`RANK`) get distinct streams, so the k-th image on each rank is not augmented alike.

    Pickling keeps only `seed` (DataLoader workers receive a copy and build their own generator).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._key: tuple | None = None

    def __getstate__(self) -> dict:
        return {"seed": self.seed}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["seed"])

    def __repr__(self) -> str:
        return f"WorkerSeededGenerator(seed={self.seed})"

    def get(self) -> torch.Generator:
        """Return the generator of the current process (created on first use)."""
        info = get_worker_info()
        key = (os.getpid(), None if info is None else (info.id, info.seed))
        if self._generator is None or key != self._key:
            base = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            rank = int(os.environ.get("RANK", "0"))  # distributed ranks must not draw the same augmentations
            base = (base + rank * 1_000_000_007) % (2**63 - 1)
            if info is not None:
                base = (base * _MIX + info.seed * 1_000_003 + info.id) % (2**63 - 1)
            self._generator, self._key = torch.Generator().manual_seed(base), key
        return self._generator

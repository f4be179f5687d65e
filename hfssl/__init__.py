"""hfssl: self-supervised learning for the Hugging Face ecosystem."""

from hfssl.collators.mlm import DataCollatorForMaskedLM

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "DataCollatorForMaskedLM",
]

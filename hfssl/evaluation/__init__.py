"""hfssl.evaluation."""

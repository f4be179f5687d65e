"""hfssl.augmentations."""

"""hfssl.data."""

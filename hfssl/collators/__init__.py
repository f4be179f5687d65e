"""Data collators: masking, views and pretext tasks, one file per collator."""

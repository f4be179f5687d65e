"""hfssl.evaluation: feature extraction, weighted kNN, linear probe, fine-tuning on a fraction of the labels, Trainer
callbacks and pictures."""

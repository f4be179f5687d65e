"""Tensor image ops with an explicit torch.Generator: input decoding (image_io), batched geometric and photometric
ops, the per-view recipe and the papers' presets (presets), normalisation lookup, per-worker seeding."""

"""Sampling from trained models: the EDM Euler sampler with per-frame guidance, and writing videos/previews."""

"""Diffusion serving: requests, batching, stage costs and memory of text-to-image/video pipelines."""

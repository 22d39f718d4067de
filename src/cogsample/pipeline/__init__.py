"""Prompt (and image) to frames and latents, in memory: plan, sample, decode. It writes nothing."""

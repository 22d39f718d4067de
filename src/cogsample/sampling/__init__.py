"""The sampling math: schedules, scalings, noise, denoiser, samplers, guidance and what wraps a
denoiser (caches, context windows, parallel groups). It knows no model and no file."""

"""Benchmarks: speed and memory (:mod:`cogsample.bench.speed`), sample quality (:mod:`cogsample.bench.quality`)."""

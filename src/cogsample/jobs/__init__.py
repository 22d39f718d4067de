"""Results to finished files, exactly once: naming, claims and locks, the outputs and their atomic
commit, batches, torchrun groups and Ray."""

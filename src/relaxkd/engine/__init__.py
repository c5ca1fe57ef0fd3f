"""Shared training machinery on Lightning: samplers, optimisers, metrics, trainer construction."""

"""The stages: one file each, declaring one ``StageRecord`` over a ``Context`` (stages/graph.py lists them)."""

"""The scoring engine: the Scorer, the per-model batchers, and the Engine that builds them from settings."""

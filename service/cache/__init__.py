"""The Redis and in-process caches of judgements and quality scores: key scheme, memory tier, Redis tier."""

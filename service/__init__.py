"""The Darling Reward Service: HTTP API, batching, caching, settings and CLI."""

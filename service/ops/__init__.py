"""Operations: metrics, logging, the HTTP middleware (ids, auth, limits, access log) and API keys."""

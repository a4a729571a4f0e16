"""The reward math and the model backends. No web code, no asyncio queues, no Redis."""

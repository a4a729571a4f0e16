"""gRPC transport beside HTTP: the same Scorer, schema, limits, keys and error messages.

The contract is protos/darling/v1/reward.proto; the stubs live in the client package (darling_client.proto).
"""

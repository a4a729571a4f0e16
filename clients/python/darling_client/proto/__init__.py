"""Generated gRPC stubs (protos/darling/v1/reward.proto). Do not edit: run scripts/gen_grpc.py.

Importing them needs the `grpc` extra: pip install 'darling-reward-client[grpc]'.
"""

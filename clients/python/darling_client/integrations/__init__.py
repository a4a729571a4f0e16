"""One-line integrations with RL trainers: TRL, OpenRLHF, veRL, slime.

Each module imports its trainer lazily (or not at all), so `darling_client` never pulls in torch.
"""

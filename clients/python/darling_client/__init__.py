"""Client SDK and wire schema for the Darling Reward Service. Never imports torch."""

from darling_client.schemas import (
    GroupReward,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    RolloutGroup,
    RolloutReward,
)

__all__ = ["GroupReward", "RewardOptions", "RewardRequest", "RewardResponse", "RolloutGroup", "RolloutReward"]

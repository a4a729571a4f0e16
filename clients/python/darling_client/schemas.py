"""The wire schema: the one definition of what crosses HTTP (and gRPC) between trainers and the service.

The server imports these models too, so a field changes in exactly one place. Nothing here may import
torch or any server code: this package installs on its own.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

PartitionAlgorithm = Literal["all_pairs", "greedy"]
CombineMode = Literal["multiplicative", "additive", "quality_only"]
QualityShift = Literal["none", "group_min"]
QualitySource = Literal["client", "verifier", "reward-model"]
# A run label is a Prometheus label value and a URL path segment (GET /v1/runs/{run}/stats): no slashes or spaces.
RUN_PATTERN = r"^[A-Za-z0-9_.:@+=-]+$"
RUN_MAX_LENGTH = 128
Rating = Annotated[int, Field(ge=1, le=10)]


class _Strict(BaseModel):
    # Unknown fields are rejected so that a typo in an option name is a 422, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class RewardOptions(_Strict):
    """Per-request options. Every field has the SPEC default, so `{}` means "the published method"."""

    partition: PartitionAlgorithm = Field(
        "all_pairs", description="`all_pairs` (DARLING training, transitive closure) or `greedy` (NoveltyBench)."
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Classifier threshold: equivalent iff p > threshold. Default: the classifier's own.",
    )
    diversity_floor: float = Field(0.1, ge=0.0, le=1.0, description="Lower bound on each rollout's diversity.")
    combine: CombineMode = Field("multiplicative", description="How quality and diversity make the reward.")
    additive_lambda: float = Field(1.0, description="Weight of z(diversity) when combine = additive.")
    quality_shift: QualityShift = Field("none", description="`group_min` subtracts the group's minimum quality.")
    cache: bool = Field(True, description="Use and fill the judgement/quality caches for this request.")
    deadline_ms: int | None = Field(
        None, gt=0, le=3_600_000, description="Give up (HTTP 504) if the request is not done in this time."
    )
    run: str | None = Field(
        None,
        min_length=1,
        max_length=RUN_MAX_LENGTH,
        pattern=RUN_PATTERN,
        description="Training-run label: the service keeps rolling diversity figures per run "
        "(GET /v1/runs/{run}/stats, darling_run_* metrics). Letters, digits and _ . : @ + = -.",
    )
    step: int | None = Field(None, ge=0, description="Training step of these groups; per-step figures of the run.")
    rating_cuts: list[float] | None = Field(
        None,
        max_length=9,
        description="Cut points, sorted, that map quality to NoveltyBench ratings: u = 1 + cuts strictly below "
        "the quality. Default 0.1, 0.2, ..., 0.9 (for quality in [0, 1]).",
    )

    @field_validator("additive_lambda")
    @classmethod
    def _finite_lambda(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("rating_cuts")
    @classmethod
    def _sorted_cuts(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            if not all(math.isfinite(c) for c in v):
                raise ValueError("every cut must be a finite number")
            if any(b < a for a, b in itertools.pairwise(v)):
                raise ValueError(f"cuts must be sorted in ascending order, got {v}")
        return v


class RolloutGroup(_Strict):
    """The n rollouts a policy sampled for one prompt."""

    group_id: str | None = Field(None, max_length=512, description="Caller's id, echoed back.")
    prompt: str = Field(..., description="The prompt the rollouts answer.")
    responses: list[str] = Field(..., min_length=1, description="The rollouts, in the caller's order.")
    quality: list[float] | None = Field(
        None, description="Caller-supplied quality per rollout (same length as responses)."
    )
    reference: str | None = Field(None, description="Reference answer for the math verifier.")
    ratings: list[Rating] | None = Field(
        None,
        description="The caller's NoveltyBench rating (1..10) per rollout, for `utility`; unset = from the quality "
        "through options.rating_cuts.",
    )

    @field_validator("quality")
    @classmethod
    def _finite_quality(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            for i, q in enumerate(v):
                if not math.isfinite(q):
                    raise ValueError(f"quality[{i}] must be a finite number, got {q}")
        return v

    @model_validator(mode="after")
    def _quality_length(self) -> RolloutGroup:
        if self.quality is not None and len(self.quality) != len(self.responses):
            raise ValueError(
                f"quality has {len(self.quality)} values but responses has {len(self.responses)}; "
                "they must be the same length"
            )
        if self.ratings is not None and len(self.ratings) != len(self.responses):
            raise ValueError(
                f"ratings has {len(self.ratings)} values but responses has {len(self.responses)}; "
                "they must be the same length"
            )
        return self


class RewardRequest(_Strict):
    groups: list[RolloutGroup] = Field(..., min_length=1, description="One or more groups to score.")
    options: RewardOptions = Field(default_factory=RewardOptions)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "groups": [
                        {
                            "group_id": "step12-prompt3",
                            "prompt": "Name a fruit.",
                            "responses": ["An apple.", "apple", "A banana.", "Mango, definitely."],
                            "quality": [0.9, 0.8, 0.7, 0.95],
                        }
                    ],
                    "options": {"partition": "all_pairs", "diversity_floor": 0.1},
                }
            ]
        },
    )


class RolloutReward(BaseModel):
    index: int
    reward: float
    quality: float
    diversity: float
    class_id: int
    advantage: float
    truncated: bool = Field(False, description="The classifier saw a truncated version of this rollout.")


class RuleCounts(BaseModel):
    """How many pairs each rule of docs/spec.md section 2 decided."""

    identical: int = 0
    short_text: int = 0
    classifier: int = 0


class JudgementCounts(BaseModel):
    made: int = Field(0, description="Classifier judgements this request needed (cache hits included).")
    skipped: int = Field(0, description="Pairs never judged because the partition could not change.")
    cached: int = Field(0, description="Judgements answered from a cache.")
    model: int = Field(0, description="Judgements that ran a model forward.")


class CacheTierStats(BaseModel):
    hits: int = 0
    misses: int = 0


class CacheStats(BaseModel):
    memory: CacheTierStats = Field(default_factory=CacheTierStats)
    redis: CacheTierStats = Field(default_factory=CacheTierStats)


class GroupReward(BaseModel):
    group_id: str | None
    n: int
    n_classes: int
    classes: list[int] = Field(..., description="Class id per rollout, numbered by first appearance.")
    rewards: list[float]
    rollouts: list[RolloutReward]
    algorithm: PartitionAlgorithm
    classifier: str = Field(..., description="Id of the equivalence classifier.")
    threshold: float
    quality_source: QualitySource
    quality_model: str
    decided_by: RuleCounts
    judgements: JudgementCounts
    cache: CacheStats = Field(default_factory=CacheStats)
    truncated: int = Field(0, description="Rollouts the classifier saw truncated.")
    notes: list[str] = Field(default_factory=list)
    # NoveltyBench's metrics (docs/spec.md section 6). Defaults only so that replies of older servers still parse.
    distinct: int = Field(0, description="Number of classes (= n_classes), NoveltyBench's distinct_k.")
    utility: float = Field(
        0.0, description="(1-p)/(1-p^k) * sum_i p^(i-1) [rollout i opens a new class] u_i, p = 0.8; 1..10 scale."
    )
    effective_classes: float = Field(
        0.0, description="exp(entropy of the class sizes): 1 = collapsed, n = all distinct."
    )
    ratings: list[int] = Field(default_factory=list, description="u_i per rollout: the caller's or from the quality.")


class RewardResponse(BaseModel):
    groups: list[GroupReward]
    elapsed_ms: float


# ---- Per-run figures (GET /v1/runs/{run}/stats) ------------------------------------------------------------


class RunFigures(BaseModel):
    """Means over a set of groups of one run."""

    groups: int = Field(..., description="Groups these figures cover.")
    distinct: float = Field(..., description="Mean number of classes per group.")
    collapsed_share: float = Field(..., description="Share of groups with n > 1 and one class.")
    diversity: float = Field(..., description="Mean rollout diversity (after the floor), averaged over groups.")
    quality: float = Field(..., description="Mean rollout quality, averaged over groups.")
    utility: float = Field(..., description="Mean NoveltyBench utility per group.")
    effective_classes: float = Field(..., description="Mean effective number of classes per group.")


class RunStepFigures(RunFigures):
    step: int


class RunStats(BaseModel):
    run: str
    groups_seen: int = Field(..., description="Groups scored under this label since the service (or run) started.")
    last_step: int | None = Field(None, description="The step most recently sent with this run.")
    window: RunFigures = Field(..., description="The last DARLING_RUN_STATS_WINDOW groups.")
    steps: list[RunStepFigures] = Field(
        default_factory=list, description="Per step, ascending; the most recent DARLING_RUN_STATS_MAX_STEPS steps."
    )


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: a message naming the offending field where there is one."""

    error: str
    detail: str
    fields: list[str] = Field(default_factory=list)
    request_id: str | None = None


class ModelInfo(BaseModel):
    classifier: str
    classifier_fingerprint: str
    threshold: float
    quality_model: str | None
    verifier: bool
    device: str


class HealthResponse(BaseModel):
    status: str
    models: ModelInfo | None = None


# ---- Group assembly: rollouts that arrive one by one (POST /v1/rollouts) ---------------------------------


class Rollout(_Strict):
    """One rollout of a group whose other rollouts may come in other requests, from other processes."""

    group_id: str = Field(
        ...,
        min_length=1,
        max_length=512,
        description="Identifies the group across requests and replicas; must be unique per group within the "
        "server's DARLING_GROUP_TTL_S.",
    )
    group_size: int = Field(..., ge=1, description="n: how many rollouts the group has in all.")
    index: int | None = Field(
        None,
        ge=0,
        description="This rollout's position in its group, 0 <= index < group_size; null = the server assigns "
        "the next free index in arrival order (for trainers that do not know it); a retry of the same rollout "
        "(same response and quality) gets the index its first attempt was given.",
    )
    prompt: str = Field(..., description="The prompt; the same for every rollout of the group.")
    response: str = Field(..., description="This rollout's text.")
    quality: float | None = Field(None, description="Caller-supplied quality; all or none of a group send it.")
    reference: str | None = Field(None, description="Reference answer for the verifier; the same for the group.")

    @field_validator("quality")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v}")
        return v

    @field_validator("index")
    @classmethod
    def _index_in_group(cls, v: int | None, info: ValidationInfo) -> int | None:
        size = info.data.get("group_size")
        if v is not None and isinstance(size, int) and v >= size:
            raise ValueError(f"index {v} is out of range for group_size {size}")
        return v


class RolloutsRequest(_Strict):
    rollouts: list[Rollout] = Field(..., min_length=1, description="One or more rollouts, of one or more groups.")
    options: RewardOptions = Field(
        default_factory=RewardOptions, description="Scoring options; every request of a group must send the same."
    )


class AssembledReward(RolloutReward):
    """The reward of one submitted rollout, computed over its whole group."""

    group_id: str


class RolloutsResponse(BaseModel):
    rollouts: list[AssembledReward] = Field(..., description="One per submitted rollout, in request order.")
    groups: list[GroupReward] = Field(..., description="Each group the request touched, once, in first-seen order.")
    elapsed_ms: float


# ---- OpenRLHF's remote reward protocol (POST /v1/openrlhf) -------------------------------------------------


class OpenRLHFRequest(BaseModel):
    """What OpenRLHF's remote reward client posts. Extra keys are ignored: OpenRLHF versions differ."""

    query: list[str] = Field(..., min_length=1, description="prompt + response, chat template applied.")
    prompts: list[str] | None = Field(None, description="The prompts (same order and length as query).")
    labels: list[str | None] | None = Field(None, description="Per-sample labels: references for the verifier.")
    run: str | None = Field(
        None,
        min_length=1,
        max_length=RUN_MAX_LENGTH,
        pattern=RUN_PATTERN,
        description="Training-run label for the per-run figures (else the `run` query parameter).",
    )


class OpenRLHFResponse(BaseModel):
    rewards: list[float] = Field(..., description="The DARLING reward per query (used for the advantage).")
    scores: list[float] = Field(..., description="Quality per query (OpenRLHF's dynamic-filtering score).")
    extra_logs: dict[str, list[float]] = Field(default_factory=dict, description="Per-query values to log.")

"""Request and response bodies of the v1 REST API (with OpenAPI examples)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

_HARD_MAX = 100_000  # static bound; the configured limits are checked per request

_MAX_ID_CHARS = 256


def _id_value(value: Any) -> int | str:
    """One id: a non-negative 64-bit integer or a non-empty string of at most 256
    characters (one clear error, not one per union member)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("an id is a string or a non-negative integer")
    if isinstance(value, int) and not 0 <= value <= 2**63 - 1:
        raise ValueError("an integer id lies in 0..2**63-1")
    if isinstance(value, str) and not 1 <= len(value) <= _MAX_ID_CHARS:
        raise ValueError(f"a string id has 1..{_MAX_ID_CHARS} characters")
    return value


_ID_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": _MAX_ID_CHARS},
                        {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}]}
ItemId = Annotated[int | str, PlainValidator(_id_value), WithJsonSchema(_ID_SCHEMA)]
"""An item: the catalogue's string id, or the 0-based index where there is no catalogue
(rules in ``app.item_ids``)."""
UserId = Annotated[int | str, PlainValidator(_id_value), WithJsonSchema(_ID_SCHEMA)]
"""A user: any string, or the user's non-negative integer index in the training data."""


class RecommendRequest(BaseModel):
    """Ask for a slate of k items for one user."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"user_id": "u17", "history": ["sku-3", "sku-41", "sku-7"], "k": 2,
             "exclude": ["sku-5"], "explore": True},
            {"user_id": 17, "history": [3, 41, 7], "k": 2, "exclude": [5], "explore": True},
        ]},
    )

    user_id: UserId = Field(description="User id: a string, or the user's non-negative "
                            "integer index in the training data.", examples=["u17"])
    history: list[ItemId] = Field(
        min_length=1, max_length=_HARD_MAX,
        description="Item ids the user interacted with, oldest first (non-empty; at most "
        "the configured max_history). With a catalogue: the catalogue's ids; without: "
        "0-based item indices.", examples=[["sku-3", "sku-41", "sku-7"]])
    k: int = Field(default=1, ge=1, le=_HARD_MAX,
                   description="Slate size (1 ≤ k ≤ configured max_k).", examples=[2])
    exclude: list[ItemId] = Field(
        default_factory=list, max_length=_HARD_MAX,
        description="Item ids that must not be recommended.", examples=[["sku-5"]])
    explore: bool = Field(
        default=True, description="Sample from π̃ (true) or take its most likely items.")


class RecommendResponse(BaseModel):
    """The decision: send feedback for it with ``event_id``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "event_id": "5f0c8a6e2b0e4c3e9a1d2f7b6c5e4d3a", "items": ["sku-12", "sku-4"],
        "propensities": [0.031, 0.012], "sources": ["theta", "beta"],
        "policy_version": 7, "alpha": 0.35, "decision_recorded": True}]})

    event_id: str = Field(description="Id of this decision (use it in /v1/feedback).")
    items: list[int | str] = Field(
        description="Recommended item ids, best first: the catalogue's ids (strings), or "
        "0-based indices (integers) where the service has no catalogue.")
    propensities: list[float] = Field(
        description="Probability of each item under the serving mixed policy π̃.")
    sources: list[str] = Field(
        description="Which component chose each item (theta / beta).")
    policy_version: int = Field(description="Version of the policy that decided.")
    alpha: float = Field(description="Mixing weight α of that policy.")
    decision_recorded: bool = Field(
        description="False when Redis was unreachable: the slate is valid but feedback "
        "for this event cannot be learned.")
    arm: str = Field(default="mixed", description="A/B arm that served the request "
                     "(mixed unless IALP_AB_ARMS is set).")


class FeedbackRequest(BaseModel):
    """The user's response to one recommended item."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"event_id": "5f0c8a6e2b0e4c3e9a1d2f7b6c5e4d3a", "item_id": "sku-12", "reward": 4.0,
             "done": False}]},
    )

    # The id becomes part of Redis key names: only the characters the service issues.
    event_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$",
                          description="event_id returned by /v1/recommend (letters, "
                          "digits, '-' and '_').")
    item_id: ItemId = Field(description="The recommended item the feedback is about, as "
                            "/v1/recommend returned it.")
    reward: float = Field(allow_inf_nan=False, description="Finite reward (e.g. rating) "
                          "within the service's range [reward_min, reward_max] (GET "
                          "/v1/policy; default [-10, 10]); outside it: 422.", examples=[4.0])
    done: bool = Field(default=False, description="The user's session ended here.")


class FeedbackResponse(BaseModel):
    """Outcome of a feedback call."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"event_id": "5f0c8a6e2b0e4c3e9a1d2f7b6c5e4d3a", "status": "accepted",
         "stream_id": "1711111111111-0"}]})

    event_id: str
    status: Literal["accepted", "duplicate"] = Field(
        description="accepted (202): enqueued for learning; duplicate (200): this event "
        "already had feedback, nothing was enqueued.")
    stream_id: str | None = Field(default=None, description="Stream entry id when accepted.")


class FeedbackBatchRequest(BaseModel):
    """Many feedback events in one call (``POST /v1/feedback/batch``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"events": [
            {"event_id": "5f0c8a6e2b0e4c3e9a1d2f7b6c5e4d3a", "item_id": "sku-12",
             "reward": 4.0, "done": False},
            {"event_id": "0b7d1e2f3a4b5c6d7e8f9a0b1c2d3e4f", "item_id": "sku-4",
             "reward": 0.0, "done": True}]}]},
    )

    events: list[FeedbackRequest] = Field(
        min_length=1, max_length=_HARD_MAX,
        description="Feedback events, each as the body of /v1/feedback (at most the "
        "configured feedback_batch_max).")


FeedbackOutcome = Literal["accepted", "duplicate", "unknown_event", "not_in_slate"]
"""What happened to one event of a batch."""


class FeedbackBatchResult(BaseModel):
    """Outcome of one event of a batch, at the event's position."""

    event_id: str
    status: FeedbackOutcome = Field(
        description="accepted: enqueued for learning; duplicate: this event already had "
        "feedback (nothing enqueued); unknown_event: unknown or expired event_id; "
        "not_in_slate: item_id was not in the recommended slate.")
    code: int = Field(description="The status /v1/feedback answers for the same event: "
                      "202, 200, 404 or 409.")
    stream_id: str | None = Field(default=None, description="Stream entry id when accepted.")
    detail: str | None = Field(default=None, description="Why the event was refused.")


class FeedbackBatchResponse(BaseModel):
    """Outcomes of a batch, one per event in the request's order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "counts": {"accepted": 1, "duplicate": 0, "unknown_event": 1, "not_in_slate": 0},
        "results": [
            {"event_id": "5f0c8a6e2b0e4c3e9a1d2f7b6c5e4d3a", "status": "accepted",
             "code": 202, "stream_id": "1711111111111-0"},
            {"event_id": "0b7d1e2f3a4b5c6d7e8f9a0b1c2d3e4f", "status": "unknown_event",
             "code": 404, "detail": "unknown or expired event_id"}]}]})

    counts: dict[str, int] = Field(description="Events per status.")
    results: list[FeedbackBatchResult] = Field(description="One per event, in order.")


class PolicyInfo(BaseModel):
    """The policy this replica serves."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "version": 7, "scheme": "ap", "alpha": 0.35, "num_items": 300, "updates": 12,
        "events_learned": 384, "trainer_lag": 5, "trainer_lag_s": 0.4,
        "parent_version": 6,
        "created_at": "2026-03-01T12:00:00+00:00", "kept_versions": [3, 4, 5, 6, 7],
        "current_version": 7, "reward_min": -10.0, "reward_max": 10.0}]})

    version: int = Field(description="Version served by this replica.")
    scheme: str = Field(description="none (plain policy), ap or ft.")
    alpha: float = Field(description="Mixing weight α.")
    num_items: int = Field(description="Catalogue size.")
    updates: int = Field(description="Learner updates behind this version.")
    events_learned: int = Field(description="Feedback events learned into this version.")
    trainer_lag: int | None = Field(
        description="Events enqueued but not yet learned (null when Redis is down).")
    trainer_lag_s: float | None = Field(
        default=None, description="Seconds the oldest feedback event the trainer has not "
        "read yet has waited in the stream (the largest over shards; 0: it has read "
        "everything; null when Redis is down or no trainer ever read).")
    parent_version: int | None = Field(default=None, description="Version it was trained from.")
    created_at: str | None = Field(default=None,
                                    description="Publication time (ISO 8601, UTC).")
    kept_versions: list[int] = Field(default_factory=list,
                                     description="Versions available for rollback.")
    current_version: int | None = Field(
        default=None, description="Version Redis names current (replicas converge to it).")
    reward_min: float = Field(description="Smallest reward /v1/feedback accepts.")
    reward_max: float = Field(description="Largest reward /v1/feedback accepts.")
    candidate: CandidateInfo | None = Field(
        default=None, description="The version waiting for promotion, if any.")
    beta_pool: list[int] | None = Field(
        default=None, description="Item indices π_β is restricted to (the trainer's GenEE "
        "service mode); null: the whole catalogue.")
    genee: dict[str, Any] | None = Field(
        default=None, description="GenEE service mode behind this version: iteration "
        "being measured, done, impressions in it so far, last_ctr (mean reward per "
        "impression of the last finished iteration); null when the mode is off.")


class CandidateInfo(BaseModel):
    """A candidate version: the promotion gate's verdict and what shadow mode saw."""

    version: int = Field(description="Candidate version.")
    gate: dict[str, Any] | None = Field(
        default=None, description="The promotion gate's last verdict (decision, SNIPS value "
        "of candidate and served version, interval of the difference, decisions used, "
        "reason); null before the first evaluation.")
    shadow: dict[str, Any] | None = Field(
        default=None, description="Shadow mode on this replica: decisions, top-1 agreement "
        "with the served slates, mean slate overlap, skipped; null when shadow mode is off "
        "or the candidate is not loaded yet.")


class PolicyEvent(BaseModel):
    """A deployment event: promotion, rejection, rollback or submission."""

    id: str = Field(description="Redis stream entry id (time-ordered).")
    kind: str = Field(description="promotion, rejection, rollback or submission.")
    detail: dict[str, Any] = Field(description="Versions, estimates and reasons.")


class ABArmReport(BaseModel):
    """One A/B arm: its share and the feedback its users gave."""

    share: float = Field(description="Configured traffic share.")
    feedback: int = Field(description="Accepted feedback events (all replicas).")
    mean_reward: float | None = Field(description="Mean reward of that feedback.")
    se: float | None = Field(description="Standard error of the mean.")
    low: float | None = Field(description="95 % interval, lower end.")
    high: float | None = Field(description="95 % interval, upper end.")
    diff_to_mixed: dict[str, float | None] | None = Field(
        default=None, description="mean − mixed's mean with its 95 % interval (Welch).")


class ABReport(BaseModel):
    """The A/B test: configuration and per-arm results."""

    bucketing: str = Field(description="user (sticky) or request.")
    arms: dict[str, ABArmReport] = Field(description="Per arm, in configuration order.")


class RollbackRequest(BaseModel):
    """Return to an earlier kept version."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"version": 5}, {}]})

    version: int | None = Field(
        default=None, ge=0, description="Target version; omitted: the one before current.")


class ErrorResponse(BaseModel):
    """A 4xx/5xx body."""

    detail: str = Field(description="What is wrong.")


class HealthResponse(BaseModel):
    """Liveness / readiness."""

    status: Literal["ok", "unavailable"]
    policy_loaded: bool = True
    redis: bool | None = None
    decisions_recordable: bool | None = Field(
        default=None, description="Readiness: decisions can be written to Redis now.")
    policy_version: int | None = None


class CatalogueInfo(BaseModel):
    """The ids this replica accepts and returns, one page at a time."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "mode": "catalogue", "size": 300, "fingerprint": "3f1c0a9e5b7d2c41", "offset": 0,
        "item_ids": ["sku-0", "sku-1"]}]})

    mode: Literal["catalogue", "index"] = Field(
        description="catalogue: string ids of a catalogue; index: 0-based integers.")
    size: int = Field(description="Number of items; index i is item_ids[i].")
    fingerprint: str | None = Field(
        description="Hash of the catalogue's ids in order (replicas agree iff equal); "
        "null without a catalogue.")
    offset: int = Field(description="Index of the first id on this page.")
    item_ids: list[int | str] = Field(description="The ids of indices offset, offset+1, ...")

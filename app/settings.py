"""Service settings (environment variables ``IALP_*`` or ``ialp serve`` flags).

Built inside :func:`app.main.create_app`, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from trainer.transport.settings import DeploymentSettings


def default_enabled() -> bool:
    """Whether the decider process is on by default: on machines with more than one core
    (on one core the child would only compete with the event loop)."""
    return (os.cpu_count() or 1) > 1


WORKER_SEED_ENV = "IALP_WORKER_SEEDS"
"""Set by ``ialp serve --workers N`` (N > 1): each worker mixes its process id into its
sampling seed, so replicas on one machine never draw the same exploration noise."""

class ServiceSettings(DeploymentSettings):
    """Everything the API process can be configured with."""

    model_config = SettingsConfigDict(env_prefix="IALP_", extra="ignore")

    checkpoint: Path | None = Field(
        default=None, description="Policy checkpoint served until the trainer publishes "
        "a version (ignored when Redis already holds a current version).")
    catalogue: Path | None = Field(
        default=None, description="Catalogue file: the item ids callers use, row i = item "
        "index i (an items file with an item_id column, or one id per line). Unset: "
        "catalogue.txt in the checkpoint folder when present, else items are 0-based "
        "integer indices.")
    max_history: int = Field(
        default=200, ge=1, description="Longest history accepted by /v1/recommend.")
    max_k: int = Field(default=20, ge=1, description="Largest slate size k.")
    max_exclude: int = Field(default=1000, ge=0, description="Longest exclude list.")
    shadow: bool = Field(
        default=False, description="Shadow mode: the candidate version (trainer with "
        "--promotion gate, or ialp policy submit) decides beside the served one on live "
        "traffic, on its own thread, without changing what users receive; agreement is "
        "shown by GET /v1/policy.")
    shadow_fraction: float = Field(
        default=0.25, gt=0.0, le=1.0, description="Share of answered micro-batches the "
        "candidate decides in shadow mode (a sample keeps the extra CPU small; the "
        "agreement is estimated from it).")
    micro_batching: bool = Field(
        default=True, description="Batch concurrent /v1/recommend calls into one "
        "forward pass.")
    decider: bool = Field(
        default_factory=default_enabled, description="Decide k = 1 micro-batches from θ "
        "in a child process (app.decider), several batches in flight, so that the event loop "
        "keeps parsing while a batch is decided; default on with more than one core.")
    decider_timeout_s: float = Field(
        default=5.0, gt=0.0, description="Longest wait for the decider's answer to a "
        "batch; beyond it the child is killed, the batch answered 503 with Retry-After "
        "and later batches decided on the forward-pass thread.")
    decider_nice: int = Field(
        default=5, ge=0, le=19, description="Scheduling niceness the decider process adds "
        "to the service's: when the cores are contended (overload, a load generator or "
        "other processes on the box) the event loop, which every request needs, runs "
        "first; the child has slack (under overload at 4,606 items it used about half a "
        "core). 0 keeps the parent's priority.")
    score_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="Precision of the served graphs' item-score product "
        "(state · item vectors). auto: bfloat16 from 16,385 items on CPUs with native "
        "bfloat16 (half the bytes per pass over the catalogue), float32 otherwise. Draws "
        "and logged propensities always come from the same distribution.")
    batch_max_size: int = Field(default=64, ge=1, description="Largest micro-batch.")
    batch_max_wait_ms: float = Field(
        default=2.0, ge=0.0, description="Longest time the first request of a batch "
        "waits for company.")
    decision_ttl_s: int = Field(
        default=24 * 3600, ge=1, description="How long a decision accepts feedback.")
    default_reward: float | None = Field(
        default=None, description="Reward learned for a decision whose feedback never "
        "came (unset: such decisions are not learned).")
    default_reward_after_s: float = Field(
        default=600.0, gt=0.0, description="Wait before the default reward applies.")
    default_reward_sweep_s: float = Field(
        default=1.0, gt=0.0, description="How often expired decisions are swept.")
    decision_cap: int = Field(
        default=1_000_000, ge=1, description="Most decisions kept in Redis; beyond it the "
        "oldest are evicted (their feedback is answered 404), so a flood of "
        "recommendations cannot grow Redis without bound.")
    feedback_batch_max: int = Field(
        default=1000, ge=1, le=100_000, description="Most events in one POST "
        "/v1/feedback/batch (keep batches under max_body_bytes too: about 100 bytes "
        "per event).")
    reward_min: float = Field(
        default=-10.0, allow_inf_nan=False, description="Smallest reward /v1/feedback "
        "accepts (outside the range: 422).")
    reward_max: float = Field(
        default=10.0, allow_inf_nan=False, description="Largest reward /v1/feedback "
        "accepts (outside the range: 422).")
    api_key: SecretStr | None = Field(
        default=None, description="Key of /v1/feedback (and of admin calls when "
        "admin_api_key is unset): the X-API-Key header must carry it. Unset: those calls "
        "are refused (401) unless allow_anonymous is on.")
    admin_api_key: SecretStr | None = Field(
        default=None, description="When set, admin calls (rollback) need the X-API-Key "
        "header with this value instead of api_key; unset: admin calls use api_key.")
    allow_anonymous: bool = Field(
        default=False, description="Insecure opt-out (`ialp serve --insecure`): with no "
        "key configured, feedback and admin calls are accepted without one. A warning is "
        "logged at start-up.")
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Largest request body; larger ones are "
        "answered 413 before parsing.")
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="Largest request head (path, query and "
        "headers); larger ones are answered 431.")
    http_protocol: Literal["auto", "h11", "httptools"] = Field(
        default="auto", description="uvicorn HTTP implementation. h11 bounds the bytes it "
        "buffers for a request head (h11_max_incomplete_event_size); httptools (the "
        "faster default when installed) buffers a whole head before max_header_bytes is "
        "checked, so put a proxy with a head limit in front of it.")
    rate_limit_per_s: float = Field(
        default=100.0, ge=0.0, description="Requests per second on /v1/ routes allowed per "
        "client address for callers without a configured key (a wrong or random key "
        "counts as none), token bucket per replica; 0: no limit.")
    rate_limit_burst: int = Field(
        default=200, ge=1, description="Token bucket size of the per-address limit.")
    rate_limit_key_per_s: float = Field(
        default=1000.0, ge=0.0, description="Requests per second on /v1/ routes allowed "
        "per configured key (api_key, admin_api_key), token bucket per replica; 0: no "
        "limit.")
    rate_limit_key_burst: int = Field(
        default=2000, ge=1, description="Token bucket size of the per-key limit.")
    rate_limit_clients: int = Field(
        default=10_000, ge=1, description="Buckets remembered (least recently used are "
        "dropped), so random keys cannot exhaust memory.")
    timeout_keep_alive_s: int = Field(
        default=5, ge=1, description="uvicorn: close idle keep-alive connections after "
        "this many seconds.")
    limit_concurrency: int | None = Field(
        default=10_000, ge=1, description="uvicorn: connections + tasks above this are "
        "answered 503 at once (a last resort against connection floods; request overload "
        "is bounded by max_in_flight, whose 503s carry Retry-After).")
    h11_max_incomplete_event_size: int = Field(
        default=16 * 1024, ge=1024, description="uvicorn (h11): largest request line + "
        "headers in bytes.")
    policy_poll_s: float = Field(
        default=0.5, gt=0.0, description="Version check interval besides pub/sub.")
    redis_timeout_s: float = Field(
        default=0.5, gt=0.0, description="Socket timeout of Redis calls.")
    redis_cooldown_s: float = Field(
        default=1.0, ge=0.0, description="After a Redis failure, /v1/recommend skips "
        "decision writes for this long instead of waiting on a dead server.")
    max_in_flight: int | None = Field(
        default=None, ge=1, description="Requests on the working /v1/ routes in flight at "
        "once; beyond, 503 with Retry-After at once (app/overload.py). Unset: 128 with "
        "the decider process (four batches decided, four more parsed meanwhile), 64 "
        "without (one batch decided, one gathering).")
    max_queue_wait_ms: float = Field(
        default=1000.0, gt=0, description="Longest a recommendation waits for its forward "
        "pass; beyond, 503 with Retry-After instead of a late answer (above the Redis "
        "timeout, so a Redis outage still serves unrecorded slates).")
    retry_after_s: int = Field(
        default=2, ge=1, description="Retry-After of 503 answers.")
    enable_noop: bool = Field(
        default=False, description="Expose POST /v1/noop (benchmark baseline).")
    ab_arms: dict[str, float] = Field(
        default_factory=dict, description="A/B arms and their traffic shares (JSON), e.g. "
        '{"mixed": 0.8, "popular": 0.1, "random": 0.05, "version:12": 0.05}; shares sum '
        "to 1; empty: every request is served by the mixed policy (docs/deployment.md).")
    ab_bucketing: Literal["user", "request"] = Field(
        default="user", description="A/B bucketing: sticky per user (hash of salt and "
        "user id) or per request.")
    ab_salt: str = Field(
        default="ialp", description="A/B bucketing salt: change it to reshuffle users "
        "between arms.")
    ab_popularity_refresh_s: float = Field(
        default=10.0, gt=0.0, description="How often the popular arm reloads the per-item "
        "positive feedback counts from Redis.")

    @property
    def in_flight_bound(self) -> int:
        """:attr:`max_in_flight`, or its default for this configuration."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        return 128 if self.decider and self.micro_batching else 64

    @field_validator("api_key", "admin_api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        """An empty variable (``IALP_ADMIN_API_KEY=``, as compose passes an unset one)
        means no key, never the empty key."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @field_validator("ab_arms")
    @classmethod
    def _check_arms(cls, value: dict[str, float]) -> dict[str, float]:
        from app.ab import parse_arms

        parse_arms(value)  # raises a ValueError naming what is wrong
        return value

    @model_validator(mode="after")
    def _check_rewards(self) -> ServiceSettings:
        if not self.reward_min < self.reward_max:
            raise ValueError(f"reward_min ({self.reward_min}) must be below reward_max "
                             f"({self.reward_max})")
        if self.default_reward is not None and not (
                self.reward_min <= self.default_reward <= self.reward_max):
            raise ValueError(f"default_reward ({self.default_reward}) lies outside "
                             f"[{self.reward_min}, {self.reward_max}]")
        return self

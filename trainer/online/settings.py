"""Configuration of ``ialp trainer`` (environment ``IALP_*`` or flags)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from trainer.transport.settings import DeploymentSettings


class TrainerSettings(DeploymentSettings):
    """Configuration of ``ialp trainer`` (environment ``IALP_*`` or flags)."""

    model_config = SettingsConfigDict(env_prefix="IALP_", extra="ignore")

    checkpoint: Path | None = Field(
        default=None, description="Initial policy (θ) when neither the state directory "
        "nor Redis holds one.")
    state_dir: Path = Field(
        default=Path("runs/trainer"), description="Where the trainer checkpoints every "
        "published version and its counters (restart continues from here).")
    method: str | None = Field(
        default=None, description="Learner passed to make_learner(); unset: the scheme's "
        "own (ap: the eq. 15 learner, ft: the fine-tune learner), the same classes the "
        "in-process experiments use. Any other registered learner must publish the scheme.")
    scheme: Literal["ap", "ft"] = Field(
        default="ap", description="ap: learn β beside frozen θ, anneal α; ft: fine-tune θ.")
    beta_init: Literal["copy", "random"] = Field(
        default="copy", description="ap: β starts as a copy of θ (Alg. 2, the default; "
        "its reverse KL anchor then keeps β within θ's support) or random (section 5.2's "
        "setup).")
    learner_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments of make_learner (JSON).")
    update_every: int = Field(default=64, ge=1, description="Transitions per update.")
    replay_updates: int = Field(
        default=0, ge=0, description="Rehearsal: extra updates after each update, on "
        "minibatches sampled from transitions this process already learned (in memory), "
        "as the in-process experiments' replay does; 0: each event is used once.")
    replay_capacity: int = Field(default=20_000, ge=1,
                                 description="Rehearsal memory size (transitions).")
    replay_batch: int = Field(default=64, ge=1, description="Rehearsal minibatch size.")
    publish_interval_s: float = Field(
        default=0.0, ge=0.0, description="Shortest time between two publications: the "
        "updates made in between are published together as one version (0: a version "
        "after every update). Every version costs each API replica a load and a trace "
        "(~0.1 s of CPU), so at hundreds of events/s or more set about 1 s; feedback is "
        "then served within about this interval plus one update.")
    flush_idle_s: float = Field(
        default=5.0, ge=0.0, description="Update with fewer transitions after this long "
        "without new ones (0: never), so quiet periods still get learned.")
    alpha_schedule: str = Field(default="linear", description="constant/linear/exponential.")
    alpha_start: float = Field(default=0.0, ge=0.0, le=1.0, description="α at update 0.")
    alpha_steps: int = Field(default=200, ge=1, description="Updates until α = 1.")
    alpha_end: float = Field(
        default=0.95, gt=0.0, le=1.0, description="Largest α: below 1, a share of the "
        "pre-trained θ stays on the traffic as a control, so the reward guardrail can "
        "still compare β with it (and pull α back) after the hand-over; 1: the paper's "
        "full hand-over.")
    group: str = Field(default="trainer", description="Consumer group name.")
    consumer: str = Field(
        default_factory=lambda: f"trainer-{socket.gethostname()}",
        description="Consumer name; stable across restarts so a restarted trainer re-reads "
        "its own pending entries (give each trainer on one host its own name).")
    read_count: int = Field(default=256, ge=1, description="Entries per stream read.")
    block_ms: int = Field(default=500, ge=1, description="Longest blocking read.")
    claim_idle_ms: int = Field(default=30_000, ge=1, description="Idle time after which "
                               "another consumer's pending entry is claimed.")
    claim_every_s: float = Field(default=5.0, gt=0.0, description="Claim interval.")
    max_deliveries: int = Field(default=5, ge=1, description="Deliveries before an entry "
                                "is dead-lettered.")
    metrics_port: int = Field(default=0, ge=0, description="Prometheus port (0: off).")
    redis_timeout_s: float = Field(
        default=10.0, gt=0.0, description="Socket timeout of Redis commands (beyond the "
        "blocking read's own wait): a silent connection fails instead of hanging.")
    audit_log: Path | None = Field(
        default=None, description="Append which event ids each saved state learned "
        "(JSON lines, trainer/audit.py); unset: off.")
    guard_window: int = Field(
        default=2000, ge=0, description="Reward guardrail: feedback transitions compared "
        "per check (sliding window; 0 disables the guardrail).")
    guard_min_samples: int = Field(
        default=50, ge=2, description="Reward guardrail: samples each source (theta, beta) "
        "needs in the window before a verdict.")
    guard_z: float = Field(
        default=3.0, gt=0.0, description="Reward guardrail: one-sided z threshold of "
        "mean_theta - mean_beta.")
    guard_margin: float = Field(
        default=0.0, ge=0.0, description="Reward guardrail: reward gap tolerated.")
    guard_backoff: float = Field(
        default=0.5, ge=0.0, lt=1.0, description="Reward guardrail: on alarm the α "
        "schedule's step is multiplied by this.")
    guard_metric: Literal["auto", "reward", "session"] = Field(
        default="auto", description="What the reward guardrail and the automatic rollback "
        "compare: reward per decision, or the session value (reward per decision divided "
        "by the leave rate, for users who leave); auto: session once the compared "
        "feedback holds guard_min_sessions ended sessions, else reward.")
    guard_min_sessions: int = Field(
        default=10, ge=1, description="Ended sessions (feedback with done, both sides "
        "together) before guard_metric auto compares session values.")
    promotion: Literal["direct", "gate"] = Field(
        default="direct", description="direct: every new version becomes current at once; "
        "gate: it is published as the candidate and promoted only when off-policy "
        "evaluation on the logged decisions shows it is not worse than the served "
        "version (docs/deployment.md).")
    gate_window: int = Field(
        default=5000, ge=1, description="Promotion gate: newest logged decisions (with a "
        "propensity below 1) the candidate is evaluated on.")
    gate_min_samples: int = Field(
        default=200, ge=1, description="Promotion gate: logged decisions needed before a "
        "verdict.")
    gate_margin: float = Field(
        default=0.0, ge=0.0, description="Promotion gate: mean reward per decision the "
        "candidate may lose to the served version (non-inferiority margin).")
    gate_level: float = Field(
        default=0.95, gt=0.0, lt=1.0, description="Promotion gate: confidence level of "
        "the interval of candidate − served.")
    gate_every: int = Field(
        default=100, ge=1, description="Promotion gate: new logged decisions between two "
        "evaluations of the same undecided candidate.")
    rollback_min_samples: int = Field(
        default=200, ge=0, description="Automatic rollback: feedback events logged under "
        "the served version (and under the one it replaced) before their rewards are "
        "compared; 0 disables rollback.")
    rollback_window: int = Field(
        default=1000, ge=1, description="Automatic rollback: newest events per version "
        "compared.")
    rollback_z: float = Field(
        default=3.0, gt=0.0, description="Automatic rollback: one-sided Welch z of "
        "previous − served mean reward that triggers it.")
    rollback_margin: float = Field(
        default=0.0, ge=0.0, description="Automatic rollback: reward drop tolerated.")
    genee: bool = Field(
        default=False, description="GenEE service mode (scheme ap only): π_β explores "
        "only among the items of a Generative Explore-Exploit pool; the trainer measures "
        "each pool item's mean reward on the learned feedback and, every iteration, drops "
        "the worst items and proposes new ones from the items' texts (docs/service.md).")
    genee_items: Path | None = Field(
        default=None, description="GenEE: the items' texts, row i = item index i: an "
        "items file of the bring-your-own format (.tsv/.csv with an item_id column; the "
        "text is the other non-empty columns joined with '; ') or a text file with one "
        "line per item. Required with genee.")
    genee_options: dict[str, Any] = Field(
        default_factory=dict, description="GenEE: settings of trainer.gee.GEEConfig "
        "(JSON), e.g. {\"pool_size\": 5, \"drop\": 1, \"impressions\": 1000, "
        "\"iterations\": 15, \"proposer\": \"embedding\"}; impressions (pool-item "
        "feedback events per iteration) defaults to 1000 here.")

    @model_validator(mode="after")
    def _check_genee(self) -> TrainerSettings:
        """GenEE restricts β, so it needs scheme ap, the items' texts and valid options."""
        if not self.genee:
            return self
        if self.scheme != "ap":
            raise ValueError("genee restricts π_β: it needs scheme 'ap', not "
                             f"{self.scheme!r}")
        if self.genee_items is None:
            raise ValueError("genee needs genee_items, the items' texts file")
        from trainer.gee import GEEConfig

        GEEConfig.from_hyper(dict(self.genee_options))  # raises, naming the bad setting
        return self

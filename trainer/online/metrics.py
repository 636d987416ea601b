"""Prometheus metrics of the trainer process."""

from __future__ import annotations


class TrainerMetrics:
    """Prometheus collectors of the trainer."""

    def __init__(self) -> None:
        """Own registry (several trainers can live in one test process)."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.events_learned = Counter("ialp_trainer_events_learned",
                                      "Transitions learned into a published version.",
                                      registry=r)
        self.events_buffered = Counter("ialp_trainer_events_buffered",
                                       "Transitions committed to the replay buffer.",
                                       registry=r)
        self.duplicates = Counter("ialp_trainer_duplicates",
                                  "Deliveries of already learned event ids.", registry=r)
        self.dead_lettered = Counter("ialp_trainer_dead_lettered",
                                     "Entries parked in the dead-letter stream.", registry=r)
        self.updates = Counter("ialp_trainer_updates",
                               "Learner updates inside a published version.", registry=r)
        self.update_seconds = Histogram("ialp_trainer_update_seconds",
                                        "Duration of one update + publication.", registry=r)
        self.version = Gauge("ialp_trainer_policy_version", "Last published version.",
                             registry=r)
        self.alpha = Gauge("ialp_trainer_alpha", "α of the last published version.",
                           registry=r)
        self.buffer = Gauge("ialp_trainer_buffer_size", "Transitions awaiting an update.",
                            registry=r)
        self.rejected_updates = Counter(
            "ialp_trainer_rejected_updates", "Updates not published because the loss or "
            "the weights became non-finite (the last good version stays served).",
            ["reason"], registry=r)
        for reason in ("nonfinite_loss", "nonfinite_weights", "nonfinite_learner"):
            self.rejected_updates.labels(reason=reason)
        self.events_rejected = Counter(
            "ialp_trainer_events_rejected", "Transitions of rejected updates (consumed, "
            "not learned).", registry=r)
        self.guard_alarm = Gauge(
            "ialp_trainer_guardrail_alarm", "1 while the learnable policy's online reward "
            "is measurably below the frozen policy's (α is being pulled back).", registry=r)
        self.guard_alarms = Counter(
            "ialp_trainer_guardrail_alarms", "Updates at which the guardrail pulled α "
            "back.", registry=r)
        self.guard_reward = Gauge(
            "ialp_trainer_guardrail_mean_reward", "Mean online reward per source over the "
            "guardrail window.", ["source"], registry=r)
        self.guard_z = Gauge("ialp_trainer_guardrail_z", "Welch z of mean_theta - "
                             "mean_beta over the window (nan without a verdict).",
                             registry=r)
        self.promotions = Counter(
            "ialp_trainer_promotions", "Candidate versions made current by the promotion "
            "gate.", registry=r)
        self.gate_rejections = Counter(
            "ialp_trainer_gate_rejections", "Candidate versions the promotion gate found "
            "worse than the served one.", registry=r)
        self.rollbacks = Counter(
            "ialp_trainer_rollbacks", "Served versions rolled back automatically because "
            "their users' rewards fell below the previous version's.", registry=r)
        self.events_control = Counter(
            "ialp_trainer_events_control", "Feedback of A/B control arms (random, popular): "
            "consumed and counted, never learned.", registry=r)
        self.genee_iteration = Gauge(
            "ialp_trainer_genee_iteration", "GenEE service mode: the iteration being "
            "measured (1-based; past the last one the pool is final).", registry=r)
        self.genee_pool_ctr = Gauge(
            "ialp_trainer_genee_pool_ctr", "GenEE service mode: mean reward per pool-item "
            "impression in the iteration being measured (nan before one).", registry=r)
        self.genee_last_ctr = Gauge(
            "ialp_trainer_genee_last_ctr", "GenEE service mode: CTR (mean reward per "
            "impression) of the pool in the last finished iteration.", registry=r)

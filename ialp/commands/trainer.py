"""``ialp trainer``: the online trainer reading feedback from Redis.

Every flag has an ``IALP_*`` environment variable (see
``trainer.online.TrainerSettings``); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``trainer``."""
    p = sub.add_parser("trainer", help="run the online trainer (Redis stream consumer)")
    p.add_argument("--redis-url", help="Redis URL (env IALP_REDIS_URL); unset: embedded")
    p.add_argument("--namespace", help="Redis key prefix of this deployment")
    p.add_argument("--redis-cluster", action="store_true", default=None,
                   help="the Redis URL names a Redis Cluster (env IALP_REDIS_CLUSTER; "
                   "implied by a redis+cluster:// URL)")
    p.add_argument("--stream-shards", type=int, help="feedback streams, by user (env "
                   "IALP_STREAM_SHARDS, default 1); the same in the API and the trainer")
    p.add_argument("--checkpoint", help="initial policy checkpoint (θ)")
    p.add_argument("--state-dir", help="where the trainer checkpoints (resume point)")
    p.add_argument("--num-items", type=int, help="catalogue size without a checkpoint")
    p.add_argument("--method",
                   help="learner for make_learner (default: the scheme's own, ap or ft)")
    p.add_argument("--scheme", choices=["ap", "ft"])
    p.add_argument("--beta-init", choices=["copy", "random"])
    p.add_argument("--learner-options", type=json.loads,
                   help='JSON keyword arguments of the learner, e.g. \'{"lr": 1e-3}\'')
    p.add_argument("--update-every", type=int, help="transitions per update")
    p.add_argument("--replay-updates", type=int,
                   help="rehearsal: extra updates per update on recently learned transitions")
    p.add_argument("--flush-idle-s", type=float)
    p.add_argument("--publish-interval-s", type=float,
                   help="shortest time between two published versions (0: after every "
                   "update; about 1 at hundreds of events/s)")
    p.add_argument("--alpha-schedule", choices=["constant", "linear", "exponential"])
    p.add_argument("--alpha-start", type=float)
    p.add_argument("--alpha-steps", type=int, help="updates until α = 1")
    p.add_argument("--alpha-end", type=float,
                   help="largest α (below 1 keeps θ as the guardrail's control; 1: paper)")
    p.add_argument("--keep-versions", type=int)
    p.add_argument("--consumer", help="consumer name (keep it stable across restarts)")
    p.add_argument("--claim-idle-ms", type=int)
    p.add_argument("--max-deliveries", type=int)
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0: off)")
    p.add_argument("--promotion", choices=["direct", "gate"],
                   help="direct: new versions go live at once; gate: as candidates, "
                   "promoted when off-policy evaluation shows them not worse")
    p.add_argument("--gate-margin", type=float,
                   help="reward per decision a candidate may lose and still be promoted")
    p.add_argument("--gate-min-samples", type=int,
                   help="logged decisions needed before the gate decides")
    p.add_argument("--gate-every", type=int,
                   help="new logged decisions between evaluations of an undecided candidate")
    p.add_argument("--rollback-min-samples", type=int,
                   help="events per version before rewards are compared (0: no rollback)")
    p.add_argument("--rollback-z", type=float, help="z that triggers a rollback")
    p.add_argument("--genee", action="store_true", default=None,
                   help="GenEE service mode (scheme ap): β explores only among a GenEE pool "
                   "of items that the trainer improves from the feedback (env IALP_GENEE)")
    p.add_argument("--genee-items",
                   help="GenEE: the items' texts, row i = item i (an items .tsv/.csv with "
                   "an item_id column, or one line per item)")
    p.add_argument("--genee-options", type=json.loads,
                   help='GenEE: JSON settings of trainer.gee.GEEConfig, e.g. '
                   '\'{"pool_size": 5, "drop": 1, "impressions": 1000}\'')
    p.add_argument("--seed", type=int)
    p.set_defaults(func=_trainer)


_FIELDS = ("redis_url", "redis_cluster", "stream_shards",
           "namespace", "checkpoint", "state_dir", "num_items", "method",
           "replay_updates",
           "scheme", "beta_init", "learner_options", "update_every", "flush_idle_s",
           "publish_interval_s",
           "alpha_schedule", "alpha_start", "alpha_steps", "alpha_end", "keep_versions", "consumer",
           "claim_idle_ms", "max_deliveries", "metrics_port", "seed", "promotion",
           "gate_margin", "gate_min_samples", "gate_every", "rollback_min_samples",
           "rollback_z", "genee", "genee_items", "genee_options")


def _trainer(args: argparse.Namespace) -> int:
    import asyncio

    from trainer.online import TrainerSettings, run_trainer

    overrides: dict[str, Any] = {f: getattr(args, f) for f in _FIELDS
                                 if getattr(args, f) is not None}
    asyncio.run(run_trainer(TrainerSettings(**overrides)))
    return 0

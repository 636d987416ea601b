"""``ialp serve``: run the REST service under uvicorn.

Every flag has an ``IALP_*`` environment variable (see ``app.settings.ServiceSettings``);
a flag given on the command line wins over the environment. Keys are read from the
environment only (``IALP_API_KEY``, ``IALP_ADMIN_API_KEY``), never from flags, so they do
not show in process listings. Without a key, feedback and rollback answer 401 unless the
service is started with ``--insecure``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve``."""
    p = sub.add_parser("serve", help="run the recommendation REST service (uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--redis-url", help="Redis URL (env IALP_REDIS_URL); unset: embedded "
                   "redis-server with persistence")
    p.add_argument("--namespace", help="Redis key prefix of this deployment")
    p.add_argument("--redis-cluster", action="store_true", default=None,
                   help="the Redis URL names a Redis Cluster (env IALP_REDIS_CLUSTER; "
                   "implied by a redis+cluster:// URL)")
    p.add_argument("--stream-shards", type=int, help="feedback streams, by user (env "
                   "IALP_STREAM_SHARDS, default 1); the same in the API and the trainer")
    p.add_argument("--checkpoint", help="policy checkpoint directory to serve")
    p.add_argument("--catalogue", help="catalogue file: the item ids callers use (an items "
                   "file with an item_id column, or one id per line); default: "
                   "catalogue.txt in the checkpoint folder, else integer item indices")
    p.add_argument("--num-items", type=int, help="catalogue size of the untrained policy "
                   "used without a checkpoint")
    p.add_argument("--max-history", type=int)
    p.add_argument("--max-k", type=int)
    p.add_argument("--micro-batching", action=argparse.BooleanOptionalAction, default=None,
                   help="batch concurrent /v1/recommend calls (default on)")
    p.add_argument("--decider", action=argparse.BooleanOptionalAction, default=None,
                   help="decide k = 1 batches in a child process, several batches in flight "
                   "(default on with more than one core and one worker; "
                   "docs/performance.md)")
    p.add_argument("--score-precision", choices=("auto", "float32", "bfloat16"),
                   help="precision of the served item-score product (default auto: "
                   "bfloat16 above 16,384 items where the CPU has it natively)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (uvicorn), each with its own "
                   "policy copy and micro-batcher, sharing Redis and the published "
                   "policy; about one per core (docs/performance.md)")
    p.add_argument("--batch-max-size", type=int)
    p.add_argument("--batch-max-wait-ms", type=float)
    p.add_argument("--default-reward", type=float,
                   help="learn this reward for decisions without feedback (default off)")
    p.add_argument("--default-reward-after-s", type=float)
    p.add_argument("--reward-min", type=float, help="smallest accepted reward (default -10)")
    p.add_argument("--reward-max", type=float, help="largest accepted reward (default 10)")
    p.add_argument("--decision-cap", type=int, help="most decisions kept in Redis "
                   "(oldest evicted; default 1,000,000)")
    p.add_argument("--rate-limit-per-s", type=float, help="requests/s per client address "
                   "without a configured key (default 100; 0: no limit)")
    p.add_argument("--rate-limit-key-per-s", type=float, help="requests/s per configured "
                   "key (default 1000; 0: no limit)")
    p.add_argument("--insecure", dest="allow_anonymous", action="store_true", default=None,
                   help="accept feedback and rollback without a key when IALP_API_KEY is "
                   "unset (env IALP_ALLOW_ANONYMOUS=true; for a private machine only)")
    p.add_argument("--enable-noop", action="store_true", default=None,
                   help="expose POST /v1/noop (benchmark baseline)")
    p.add_argument("--seed", type=int)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_serve)


_FIELDS = ("redis_url", "redis_cluster", "stream_shards",
           "namespace", "checkpoint", "catalogue", "num_items", "max_history", "max_k",
           "micro_batching", "decider", "score_precision", "batch_max_size",
           "batch_max_wait_ms", "default_reward", "default_reward_after_s", "enable_noop",
           "seed", "reward_min", "reward_max", "decision_cap", "rate_limit_per_s",
           "rate_limit_key_per_s", "allow_anonymous")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.fast_refusal import http_protocol
    from app.main import create_app
    from app.settings import ServiceSettings

    overrides: dict[str, Any] = {f: getattr(args, f) for f in _FIELDS
                                 if getattr(args, f) is not None}
    settings = ServiceSettings(**overrides)
    # Slow or oversized clients: idle keep-alive connections are closed, request heads
    # are bounded, and beyond limit_concurrency new work is refused with 503.
    options: dict[str, Any] = dict(
        host=args.host, port=args.port, log_level=args.log_level, access_log=False,
        timeout_keep_alive=settings.timeout_keep_alive_s,
        http=http_protocol(settings.http_protocol),
        limit_concurrency=settings.limit_concurrency,
        h11_max_incomplete_event_size=settings.h11_max_incomplete_event_size)
    if args.workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    return _serve_workers(args.workers, overrides, settings, options)


def _serve_workers(workers: int, overrides: dict[str, Any], settings: Any,
                   options: dict[str, Any]) -> int:
    """uvicorn's worker processes, each building the app from the environment: the
    command line's settings travel as ``IALP_*`` variables. Without a Redis URL this
    process starts the embedded server first, so the workers share one."""
    import uvicorn

    from app.settings import WORKER_SEED_ENV
    from trainer.transport.redis_server import ensure_embedded_redis

    embedded = None
    if settings.redis_url is None:
        url, embedded = ensure_embedded_redis(settings.embedded_redis_dir,
                                              settings.embedded_redis_port)
        overrides = {**overrides, "redis_url": url}
    if "decider" not in overrides and "IALP_DECIDER" not in os.environ:
        # One worker per core already keeps the cores busy; a decider per worker would
        # put two busy processes on each (measured: 2 workers on 2 cores served 1,552
        # recommendations/s with deciders at 4,606 items, docs/performance.md).
        overrides = {**overrides, "decider": False}
    for name, value in overrides.items():
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        os.environ[f"IALP_{name.upper()}"] = text
    # Each worker draws its own exploration noise (see app.lifespan).
    os.environ[WORKER_SEED_ENV] = "1"
    try:
        uvicorn.run("app.main:create_app", factory=True, workers=workers, **options)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0

"""``ialp simulate`` and ``ialp loadtest``: drive a running service over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from ialp.output import format_table, print_json

ROUND_COLUMNS = [
    "round", "return", "length", "r_avg", "policy_version", "alpha", "events_learned",
    "train_return", "seconds",
]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``simulate`` and ``loadtest``."""
    p = sub.add_parser("simulate", help="replay simulated users against a running service")
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--env", default="coat")
    p.add_argument("--rounds", type=int, default=5, help="training rounds (default 5)")
    p.add_argument("--episodes", type=int, default=200, help="training episodes per round")
    p.add_argument("--eval-episodes", type=int, default=100, help="test episodes per round")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learn-wait", type=float, default=30.0,
                   help="seconds to wait for the trainer to catch up after each round")
    p.add_argument("--ready-wait", type=float, default=120.0,
                   help="seconds to wait for the service to become ready (default 120)")
    p.add_argument("--allow-repeats", action="store_true",
                   help="do not send the episode's shown items as `exclude`")
    p.add_argument("--out", type=Path, default=Path("runs/simulate"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_simulate)

    lt = sub.add_parser("loadtest", help="measure latency and throughput of a service")
    lt.add_argument("--base-url", default="http://127.0.0.1:8000")
    mode = lt.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--concurrency", type=int,
                      help="closed loop: connections in flight over all processes (default 16)")
    lt.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    lt.add_argument("--env", default="coat", help="dataset whose user histories are sent")
    lt.add_argument("--synthetic-items", type=int, default=0,
                    help="send random histories over a catalogue of this size instead")
    lt.add_argument("--feedback-ratio", type=float, default=0.5)
    lt.add_argument("--k", type=int, default=1)
    lt.add_argument("--seed", type=int, default=0)
    lt.add_argument("--learn-wait", type=float, default=30.0)
    lt.add_argument("--processes", type=int, default=1,
                    help="load-generating processes, results merged (default 1)")
    lt.add_argument("--connections", type=int, default=16,
                    help="open loop: connections per process opened before the start "
                         "(more are opened when all are busy, up to --max-in-flight)")
    lt.add_argument("--max-in-flight", type=int, default=2000,
                    help="open loop: connection cap over all processes; arrivals beyond "
                         "it are counted as dropped")
    lt.add_argument("--out", type=Path, default=Path("runs/loadtest"))
    lt.add_argument("--json", action="store_true")
    lt.set_defaults(func=_loadtest)


def _api_key() -> str | None:
    return os.environ.get("IALP_API_KEY") or None


def _simulate(args: argparse.Namespace) -> int:
    from simulator_client.envs.by_name import make_env
    from simulator_client.simulate import SimulateConfig, simulate, write_outputs

    config = SimulateConfig(
        env=args.env, rounds=args.rounds, episodes=args.episodes,
        eval_episodes=args.eval_episodes, concurrency=args.concurrency, seed=args.seed,
        learn_wait_s=args.learn_wait, exclude_seen=not args.allow_repeats,
        ready_wait_s=args.ready_wait,
    )
    train_env = make_env(args.env, "train", progress=not args.json)
    test_env = make_env(args.env, "test", progress=not args.json)

    def show(row: dict[str, object]) -> None:
        if not args.json:
            print(format_table([row], ROUND_COLUMNS).splitlines()[-1] if row["round"] else
                  format_table([row], ROUND_COLUMNS), flush=True)

    rows = asyncio.run(
        simulate(args.base_url, config, train_env=train_env, test_env=test_env,
                 api_key=_api_key(), on_round=None if args.json else show)
    )
    write_outputs(rows, config, args.out)
    if args.json:
        from dataclasses import asdict

        print_json({"config": asdict(config), "rounds": rows})
    else:
        print(f"\nwrote {args.out / 'simulate.json'} and {args.out / 'simulate.png'}")
    return 0


def _histories(args: argparse.Namespace) -> tuple[list[list[int]], tuple[str, ...] | None]:
    """Histories (item indices) to send, with the environment's item ids (``None`` for
    synthetic items: the decimal index)."""
    import numpy as np

    from policy.types import PAD

    rng = np.random.default_rng(args.seed)
    if args.synthetic_items:
        lengths = rng.integers(1, 21, size=1000)
        return [rng.integers(0, args.synthetic_items, size=n).tolist() for n in lengths], None
    from simulator_client.envs.by_name import make_env

    env = make_env(args.env, "test", progress=False)
    obs = env.reset(env.sample_users(min(1000, 4 * len(env.users)), rng))
    out = []
    for row in obs.history:
        h = row[row != PAD].tolist()
        out.append(h if h else [int(rng.integers(0, env.num_items))])
    return out, env.item_ids


def _loadtest(args: argparse.Namespace) -> int:
    from simulator_client.loadtest import LoadConfig, run_loadtest, write_report

    config = LoadConfig(
        duration_s=args.duration, rate=args.rate,
        concurrency=None if args.rate else (args.concurrency or 16),
        feedback_ratio=args.feedback_ratio, k=args.k, seed=args.seed,
        learn_wait_s=args.learn_wait, processes=args.processes,
        connections=args.connections, max_in_flight=args.max_in_flight,
    )
    histories, item_ids = _histories(args)
    report = asyncio.run(
        run_loadtest(args.base_url, config, histories=histories, item_ids=item_ids,
                     api_key=_api_key())
    )
    write_report(report, args.out)
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    if args.json:
        print_json(clean)
        return 0
    rows = [{"phase": name, **vals} for name, vals in clean["phases"].items()]
    print(format_table(rows, ["phase", "requests", "throughput_rps", "p50_ms", "p90_ms",
                              "p99_ms", "max_ms", "dropped"]))
    for name, vals in clean["phases"].items():
        if vals["errors_by_status"]:
            print(f"{name} errors: {vals['errors_by_status']} (with Retry-After: "
                  f"{vals['retry_after_by_status']})")
    print(f"ratios to no-op: {clean['ratios_to_noop']}")
    print(f"feedback: {clean['feedback']}")
    print(f"trainer: {clean['trainer']}")
    print(f"wrote {args.out / 'loadtest.json'} and {args.out / 'loadtest.png'}")
    return 0

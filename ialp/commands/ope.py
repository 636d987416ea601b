"""``ialp ope`` and ``ialp export``: off-policy evaluation of a candidate policy on the
decisions a deployment logged, and the export of those decisions as JSON lines.

Both read the feedback stream of one deployment (``--redis-url`` / ``IALP_REDIS_URL``,
``--namespace`` / ``IALP_NAMESPACE``); ``ialp ope --from-file`` reads an export instead
and needs no Redis. See docs/ope.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``ope`` and ``export``."""
    p = sub.add_parser("ope", help="off-policy evaluation of a candidate policy on the "
                       "logged decisions (IPS, SNIPS, DR with bootstrap intervals)")
    p.add_argument("--candidate", required=True,
                   help="checkpoint directory, or a policy version kept in Redis")
    p.add_argument("--since", help="only decisions logged at or after this time "
                   "(ISO 8601, naive = UTC, or Unix seconds)")
    _redis_args(p)
    p.add_argument("--from-file", type=Path,
                   help="evaluate on a JSON lines export instead of Redis")
    p.add_argument("--direct", choices=["reward-model", "critic"], default="reward-model",
                   help="DR's direct model: a reward model fitted on the logs (default) or "
                   "the candidate's critic")
    p.add_argument("--clip", type=float, help="clip importance weights at this value")
    p.add_argument("--soften", type=float, default=0.0,
                   help="evaluate a greedy candidate as (1-x)·greedy + x·uniform")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--level", type=float, default=0.95, help="interval level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/ope"),
                   help="folder for ope.json and ope.png (default runs/ope)")
    p.add_argument("--json", action="store_true", help="print the JSON report")
    p.set_defaults(func=_ope)

    e = sub.add_parser("export", help="write the logged decisions joined with their "
                       "feedback as JSON lines")
    e.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    e.add_argument("--since", help="only decisions logged at or after this time")
    _redis_args(e)
    e.set_defaults(func=_export)


def _redis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="Redis URL of the deployment (env IALP_REDIS_URL)")
    p.add_argument("--namespace", help="Redis key prefix (env IALP_NAMESPACE, default ialp)")


def _fail(msg: str) -> int:
    print(f"ialp: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _client(args: argparse.Namespace) -> tuple[Any, Any]:
    import redis

    from trainer.transport.keys import RedisKeys

    url = args.redis_url or os.environ.get("IALP_REDIS_URL")
    if not url:
        raise _UsageError("no Redis to read: pass --redis-url (or set IALP_REDIS_URL), "
                          "or evaluate an export with --from-file")
    ns = args.namespace or os.environ.get("IALP_NAMESPACE") or "ialp"
    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise _UsageError(f"cannot reach Redis at {url}: {exc}") from exc
    return client, RedisKeys(ns)


class _UsageError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _since(args: argparse.Namespace) -> float | None:
    from trainer.ope.logs import parse_time

    return None if not args.since else parse_time(args.since)


def _records(args: argparse.Namespace) -> list[Any]:
    from trainer.ope.logs import read_jsonl, read_stream

    since = _since(args)
    if getattr(args, "from_file", None) is not None:
        if not args.from_file.is_file():
            raise _UsageError(f"{args.from_file}: no such export file")
        recs = list(read_jsonl(args.from_file))
        if since is not None:
            recs = [r for r in recs if r.logged_at >= since]
        return recs
    client, keys = _client(args)
    try:
        return read_stream(client, keys, since=since)
    finally:
        client.close()


def _candidate(args: argparse.Namespace) -> Any:
    from policy.checkpoint import CheckpointError, load_checkpoint, policy_from_bytes

    ref = str(args.candidate)
    path = Path(ref)
    if path.is_dir():
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:
            raise _UsageError(str(exc)) from exc
    if not ref.isdigit():
        raise _UsageError(f"--candidate {ref!r} is neither a checkpoint directory nor a "
                          "policy version number")
    if args.from_file is not None and not (args.redis_url or os.environ.get("IALP_REDIS_URL")):
        raise _UsageError("a version number is loaded from Redis: pass --redis-url, or give "
                          "a checkpoint directory with --from-file")
    client, keys = _client(args)
    try:
        blob = client.get(keys.policy_blob(int(ref)))
        if blob is None:
            kept = [int(x) for x in client.lrange(keys.policy_versions, 0, -1)]
            raise _UsageError(f"policy version {ref} is not kept in namespace "
                              f"{keys.namespace!r} (kept: {kept or 'none'})")
        try:
            return policy_from_bytes(bytes(blob))
        except CheckpointError as exc:
            raise _UsageError(f"policy version {ref}: {exc}") from exc
    finally:
        client.close()


def _ope(args: argparse.Namespace) -> int:
    from ialp.output import format_table
    from trainer.ope.logs import LogError
    from trainer.ope.report import evaluate_records, plot_report, report_rows

    try:
        policy = _candidate(args)
        records = _records(args)
        report = evaluate_records(records, policy, direct=args.direct, clip=args.clip,
                                  soften=args.soften, n_boot=args.bootstrap,
                                  level=args.level, seed=args.seed)
    except (_UsageError, LogError) as exc:
        return _fail(str(exc))
    except ValueError as exc:  # e.g. a logged action outside the candidate's catalogue
        return _fail(f"cannot evaluate: {exc}")
    report["source"] = (str(args.from_file) if args.from_file is not None
                        else {"namespace": args.namespace or os.environ.get("IALP_NAMESPACE")
                              or "ialp"})
    report["candidate"]["ref"] = str(args.candidate)
    report["since"] = args.since
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ope.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
    plot_report(report, args.out / "ope.png")
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    d = report["decisions"]
    print(f"candidate {args.candidate} (version {report['candidate']['version']}) on "
          f"{d['used']} of {d['logged']} logged decisions, {d['users']} users "
          f"(skipped: {d['skipped']}); versions served: {d['by_version']}")
    print(format_table(report_rows(report), ["estimator", "value", "low", "high", "ess"]))
    w = report["weights"]
    print(f"weights: max {w['max']:.3g}, mean {w['mean']:.3g} (1 expected), "
          f"ESS {w['ess']:.1f}; intervals: {int(args.level * 100)} % bootstrap over users")
    print(f"wrote {args.out / 'ope.json'} and {args.out / 'ope.png'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from trainer.ope.logs import LogError, write_jsonl

    try:
        records = _records(args)
    except (_UsageError, LogError) as exc:
        return _fail(str(exc))
    n = write_jsonl(records, args.out)
    print(f"wrote {n} logged decisions to {args.out}")
    return 0

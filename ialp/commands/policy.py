"""``ialp policy``: the deployment's policy versions.

* ``ialp policy status``: the served (current) version, the candidate and the promotion
  gate's last verdict on it, the kept versions.
* ``ialp policy submit --checkpoint DIR``: publish a checkpoint as the candidate; a trainer
  running with ``--promotion gate`` promotes it only when off-policy evaluation on the
  logged decisions shows it is not worse than the served version.
* ``ialp policy events``: promotions, rejections and rollbacks, newest first.

All read the deployment named by ``--redis-url`` / ``IALP_REDIS_URL`` and ``--namespace`` /
``IALP_NAMESPACE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``policy`` with its ``status``, ``submit`` and ``events`` subcommands."""
    p = sub.add_parser("policy", help="served and candidate versions, submit a candidate, "
                       "deployment events")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    st = actions.add_parser("status", help="current, candidate (with the gate's verdict), "
                            "kept versions")
    sm = actions.add_parser("submit", help="publish a checkpoint as the candidate")
    sm.add_argument("--checkpoint", required=True, help="checkpoint folder (ialp pretrain, "
                    "a trainer's state dir policy/)")
    ev = actions.add_parser("events", help="promotions, rejections, rollbacks")
    ev.add_argument("--count", type=int, default=20)
    for q in (st, sm, ev):
        q.add_argument("--redis-url", help="Redis URL of the deployment (env IALP_REDIS_URL)")
        q.add_argument("--namespace", help="Redis key prefix (env IALP_NAMESPACE, default "
                       "ialp)")
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=_policy)


def _policy(args: argparse.Namespace) -> int:
    url = args.redis_url or os.environ.get("IALP_REDIS_URL")
    if not url:
        print("ialp: no Redis: pass --redis-url (or set IALP_REDIS_URL)", file=sys.stderr)
        return 2
    ns = args.namespace or os.environ.get("IALP_NAMESPACE") or "ialp"
    try:
        out = asyncio.run(_run(args, url, ns))
    except (LookupError, ValueError, OSError) as exc:
        print(f"ialp: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(args.action, out)
    return 0


async def _run(args: argparse.Namespace, url: str, ns: str) -> dict[str, Any]:
    from redis.exceptions import RedisError

    from trainer.transport.client import redis_client
    from trainer.transport.publication import PublishedPolicies
    from trainer.transport.settings import DeploymentSettings

    # The deployment's layout (IALP_STREAM_SHARDS, IALP_REDIS_CLUSTER) names its keys.
    deployment = DeploymentSettings(namespace=ns)
    client = redis_client(url, cluster=deployment.redis_cluster, socket_timeout=30)
    policies = PublishedPolicies(client, deployment.shards(url).keys)
    try:
        if args.action == "submit":
            return await _submit(policies, args.checkpoint)
        if args.action == "events":
            return {"events": await policies.events(args.count)}
        return await _status(policies)
    except RedisError as exc:
        raise OSError(f"Redis at {url}: {exc}") from exc
    finally:
        await client.aclose()


async def _submit(policies: Any, checkpoint: str) -> dict[str, Any]:
    from policy.checkpoint import load_checkpoint, now_iso, policy_to_bytes

    policy = await asyncio.to_thread(load_checkpoint, checkpoint)
    current = await policies.current_version()
    if current is not None:
        served = await policies.meta(current)
        if int(served["num_items"]) != policy.num_items:
            raise ValueError(f"the checkpoint has {policy.num_items} items, the served "
                             f"version {served['num_items']}")
    policy.version = await policies.next_version()
    policy.metadata = {**dict(policy.metadata), "submitted_from": str(checkpoint),
                       "created_at": now_iso(), "parent_version": current}
    blob = await asyncio.to_thread(policy_to_bytes, policy)
    await policies.publish(policy, blob, promote=False)
    await policies.log_event("submission", version=policy.version, checkpoint=str(checkpoint))
    return {"candidate": policy.version, "served": current}


async def _status(policies: Any) -> dict[str, Any]:
    current = await policies.current_version()
    candidate = await policies.candidate_version()
    out: dict[str, Any] = {"current": current, "candidate": candidate,
                           "kept": await policies.versions()}
    for name, version in (("current_meta", current), ("candidate_meta", candidate)):
        if version is not None:
            try:
                out[name] = await policies.meta(version)
            except LookupError:
                out[name] = None
    return out


def _print(action: str, out: dict[str, Any]) -> None:
    if action == "submit":
        print(f"submitted version {out['candidate']} as the candidate (served: "
              f"{out['served']}); a trainer with --promotion gate decides")
        return
    if action == "events":
        for e in out["events"]:
            rest = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("id", "kind"))
            print(f"{e['id']}  {e['kind']:<10} {rest}")
        if not out["events"]:
            print("no deployment events")
        return
    print(f"current:   {out['current']}")
    print(f"candidate: {out['candidate']}")
    gate = (out.get("candidate_meta") or {}).get("gate")
    if gate:
        print(f"gate:      {gate['decision']} — {gate['reason']}")
    print(f"kept:      {out['kept']}")

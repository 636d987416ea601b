"""``ialp demo``: the whole system on one machine with nothing but the install.

1. Builds the environment (the user model is trained once and cached).
2. Pre-trains the iALP policy πθ with the dataset's default judge unless a checkpoint exists.
3. Starts an embedded redis-server, the API (``ialp serve``) and the online trainer
   (``ialp trainer``, scheme A-iALP_ap) as child processes.
4. Replays simulated users against the API (``ialp simulate``) for a few rounds and prints
   the learning curve: Return, Length and R_avg on test users after each training round,
   with the policy version and α the service reported.

Ctrl-C stops everything cleanly (children are terminated, Redis is shut down).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator_client.envs.base import RecBatchEnv


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    p = sub.add_parser("demo", help="run the whole system end to end on embedded defaults")
    p.add_argument("--env", default="coat", help="environment (default coat)")
    p.add_argument("--rounds", type=int, default=5, help="training rounds (default 5)")
    p.add_argument("--episodes", type=int, default=120, help="training episodes per round")
    p.add_argument("--eval-episodes", type=int, default=80, help="test episodes per round")
    p.add_argument("--pretrain-epochs", type=int, default=3,
                   help="epochs of iALP pre-training when no checkpoint exists (default 3)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="iALP checkpoint to start from (default: pre-train one into --out)")
    p.add_argument("--scheme", choices=["ap", "ft"], default="ap")
    p.add_argument("--update-every", type=int, default=16,
                   help="feedback events per learner update (default 16: the in-process "
                   "experiments' one update per 16 interactions)")
    p.add_argument("--alpha-steps", type=int, default=60,
                   help="updates until α = 1 (default 60: the demo is short)")
    p.add_argument("--replay-updates", type=int, default=3,
                   help="rehearsal updates per update on recently learned feedback "
                   "(default 3, about the in-process experiments' reuse of each transition)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.set_defaults(func=_demo)


REFERENCE_EPISODES = 400
"""Test episodes behind each reference line (random, popular): local and fast."""


def _references(test_env: RecBatchEnv, seed: int) -> dict[str, float]:
    """Return of the random and the popularity list on the test users, run locally on
    the same environment: the lines the served policy is read against."""
    from simulator_client.baselines import baseline_for
    from simulator_client.evaluation import evaluate

    out = {}
    for name in ("random", "popular"):
        policy = baseline_for(name, test_env)
        m = evaluate(test_env, policy, episodes=REFERENCE_EPISODES, seed=seed)
        out[name] = float(m["return"])
    return out


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], logs: list[Path],
                timeout_s: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise SystemExit(f"{log.stem} exited early; its log:\n{log.read_text()[-3000:]}")
        try:
            if (httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                    and httpx.get(f"{url}/v1/policy", timeout=2).json()["version"] >= 1):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the service did not become ready in {timeout_s:.0f} s; see {logs}")


def _ensure_checkpoint(args: argparse.Namespace) -> Path:
    if args.checkpoint is not None:
        if not Path(args.checkpoint).exists():
            raise SystemExit(f"checkpoint {args.checkpoint} does not exist")
        return Path(args.checkpoint)
    run_dir = args.out / f"{args.env}-ialp"
    ckpt = run_dir / "policy"
    if ckpt.exists():
        print(f"Using the iALP checkpoint {ckpt} (delete {run_dir} to pre-train again).")
        return ckpt
    print(f"Pre-training the iALP policy on {args.env} with the offline judge → {run_dir}")
    code = subprocess.call([sys.executable, "-m", "ialp", "pretrain", "--env", args.env,
                            "--seed", str(args.seed),
                            "--epochs", str(args.pretrain_epochs), "--out", str(run_dir)])
    if code != 0 or not ckpt.exists():
        raise SystemExit(f"pre-training failed (exit {code})")
    return ckpt


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from ialp.commands.simulate import ROUND_COLUMNS
    from ialp.output import format_table
    from ialp.procs import spawn_ialp, stop_all
    from simulator_client.envs.by_name import make_env
    from simulator_client.simulate import SimulateConfig, simulate, write_outputs
    from trainer.transport.redis_server import EmbeddedRedis, free_port

    # Child processes (redis-server changes its working folder) get absolute paths only.
    args.out = Path(args.out).resolve()
    if args.checkpoint is not None:
        args.checkpoint = Path(args.checkpoint).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"Building the {args.env} environments ...")
    train_env = make_env(args.env, "train", progress=True)
    test_env = make_env(args.env, "test", progress=True)
    ckpt = _ensure_checkpoint(args)
    refs = _references(test_env, args.seed)
    print("References on the test users (" + str(REFERENCE_EPISODES) + " local episodes): "
          + ", ".join(f"{k} {v:.2f}" for k, v in refs.items()))

    redis = EmbeddedRedis(args.out / "redis", port=free_port(), persistence=True).start()
    port = free_port()
    ns = f"demo-{uuid.uuid4().hex[:6]}"
    common = ["--redis-url", redis.url, "--namespace", ns, "--checkpoint", str(ckpt),
              "--seed", str(args.seed)]
    logs = [args.out / "trainer.log", args.out / "api.log"]
    # The service requires a key for feedback: a fresh random one for this run, passed to
    # the children through the environment (never on a command line) and used below.
    import secrets

    api_key = secrets.token_hex(16)
    env = {"IALP_API_KEY": api_key}
    procs = [
        # The learner's defaults are the online A2C settings (trainer.learners.ONLINE_A2C).
        spawn_ialp(["trainer", *common, "--scheme", args.scheme, "--state-dir",
                    str(args.out / f"state-{ns}"), "--update-every", str(args.update_every),
                    "--alpha-steps", str(args.alpha_steps), "--replay-updates",
                    str(args.replay_updates)], logs[0], env=env),
        spawn_ialp(["serve", *common, "--port", str(port)], logs[1], env=env),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        print(f"Starting Redis ({redis.url}), the API ({url}) and the trainer; logs in "
              f"{args.out}/ ...")
        _wait_ready(url, procs, logs)
        config = SimulateConfig(env=args.env, rounds=args.rounds, episodes=args.episodes,
                                eval_episodes=args.eval_episodes,
                                concurrency=args.concurrency, seed=args.seed)
        print(f"Replaying {args.env} users: round 0 is the iALP policy before any feedback; "
              f"each later round trains on {args.episodes} episodes, then tests on "
              f"{args.eval_episodes}.\n")
        header_done = False

        def show(row: dict[str, object]) -> None:
            nonlocal header_done
            lines = format_table([row], ROUND_COLUMNS).splitlines()
            print("\n".join(lines if not header_done else lines[-1:]), flush=True)
            header_done = True

        rows = asyncio.run(simulate(url, config, train_env=train_env, test_env=test_env,
                                    api_key=api_key, on_round=show))
        write_outputs(rows, config, args.out,
                      references={**refs, "pre-trained start": float(rows[0]["return"])})
        first, last = rows[0], rows[-1]
        print(f"\nReturn on test users: {first['return']:.2f} (round 0, version "
              f"{first['policy_version']}) → {last['return']:.2f} (round {last['round']}, "
              f"version {last['policy_version']}, α = {last['alpha']:.2f}); random "
              f"{refs['random']:.2f}, popular {refs['popular']:.2f}.")
        print(f"Wrote {args.out / 'simulate.json'} and {args.out / 'simulate.png'}.")
    except KeyboardInterrupt:
        print("\nStopping ...", file=sys.stderr)
        return 130
    finally:
        stop_all(procs)
        redis.stop()
    return 0

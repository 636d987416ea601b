"""LAAC (LLM-guided Adversarial Actor-Critic) as experiment methods.

Methods registered with :func:`simulator_client.experiments.register_method`:

* ``laac``: the LAAC actor trained offline (:func:`trainer.laac.train_laac`), frozen and
  acting greedily (history masked as for every learned method); it never learns online.
* ``laac-ap``: A-iALP_ap's learner ``ap`` started from the LAAC actor as θ (θ frozen, β
  learned online, α handing over from θ to β), the adaptive scheme of the iALP methods
  with LAAC in place of the judge-distilled πθ.

What LAAC is trained on: the training users' logs of the run (``ctx.training_logs()``,
which honours the experiment's ``logs`` setting, ``all`` or ``imbalanced``), the operator's
item features, and the answers of a judge (the offline embedding judge by default) about
states of those logs. Never the simulator's rewards, its user model, or a test user.

Settings (``--hyper``):

* LAAC's own (fields of :class:`trainer.laac.LAACConfig`): the keys of ``"laac"``'s hyper
  (``{"laac": {"epochs": 4}}``), also accepted nested as ``{"laac": {"laac": {...}}}``;
  ``laac-ap`` uses the same ones, overridden by a ``"laac"`` entry in its own hyper
  (``{"laac-ap": {"laac": {"lam": 0}}}``). Equal settings share one training.
* ``laac-ap``'s learner: the suite's A-iALP_ap settings (online A2C, linear α from 0
  reaching 1 after :data:`ALPHA_HANDOVER` updates or half the run's updates), then the
  experiment's ``"ialp-ap"`` hyper (as the suite sets it), then ``"laac-ap"``'s own keys;
  ``"exploration"``/``"epsilon"`` choose an exploration strategy as for the iALP methods.

The trained actor is cached under ``<cache dir>/laac-policy/<env>-<key>/`` (``policy``: the
checkpoint, ``laac.json``: the training report), the key hashing the environment, the
seed, the network shape, every LAAC setting (defaults included), the logs and the item
features; the judge's answers (D_LLM) under ``<cache dir>/laac-dllm/``. So ``laac`` and
``laac-ap`` of one run train once, and later runs train never. The report goes to the
run's results twice: under ``"pretrain"`` (a summary with its ``extremes``, which the
suite's stability check reads beside Algorithm 1's) and as the agent's ``report``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy.checkpoint import load_checkpoint, save_checkpoint
from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig
from policy.item_features import ItemFeatures
from policy.judge.base import BaseJudge
from policy.judge.spec import JudgeSpec, JudgeSpecError
from policy.mixed import MixedPolicy
from simulator_client.datasets.paths import cache_dir
from simulator_client.experiments.cached import cache_folder, write_atomically
from simulator_client.experiments.context import ExperimentConfig, MethodContext, register_method
from simulator_client.experiments.methods.ialp import IALP_KEYS, ExploringAgent, FrozenAgent
from trainer.agents import Agent, OnlineConfig
from trainer.laac import METHOD_NAME, LAACConfig, train_laac
from trainer.learners import ONLINE_AP, make_learner
from trainer.learners.base import Learner

log = logging.getLogger(__name__)

AP_METHOD = "laac-ap"
ALPHA_HANDOVER = 150
"""Learner updates after which ``laac-ap``'s α reaches 1 (at most half the run's updates):
the suite's A-iALP_ap setting (``simulator_client.experiments.suite_config``, which this
package may not import)."""
AP_DEFAULTS: dict[str, Any] = {**ONLINE_AP, "alpha_schedule": "linear", "alpha_start": 0.0}
"""The suite's A-iALP_ap hyperparameters apart from ``alpha_steps``."""
SUMMARY_KEYS = ("extremes", "seconds", "updates", "transitions", "dllm_size",
                "unexplored_share", "anchoring_gap", "judge")
"""Fields of the LAAC report copied into a run's ``"pretrain"`` results."""
_FORMAT = 1
_MEMO: dict[str, MixedPolicy] = {}


# -- settings -----------------------------------------------------------------------------
def laac_settings(ctx: MethodContext) -> LAACConfig:
    """LAAC's settings for method ``ctx.name`` (see the module docstring)."""
    shared = dict(ctx.experiment.hyper.get(METHOD_NAME, {}))
    nested = shared.pop(METHOD_NAME, {})
    settings = {**shared, **nested}
    if ctx.name != METHOD_NAME:
        settings.update(ctx.hyper.get(METHOD_NAME, {}))
    return LAACConfig.from_hyper(settings)


def alpha_steps(experiment: ExperimentConfig) -> int:
    """α's hand-over length as the suite computes it for A-iALP_ap."""
    online = experiment.online
    updates = (experiment.steps - online.warmup) / experiment.num_envs
    return max(1, min(ALPHA_HANDOVER, int(updates * online.updates_per_step / 2)))


def ap_settings(ctx: MethodContext) -> tuple[dict[str, Any], ExplorationConfig | None]:
    """(learner hyperparameters, exploration or None) of ``laac-ap``."""
    base = {k: v for k, v in ctx.experiment.hyper.get("ialp-ap", {}).items()
            if k not in IALP_KEYS}
    own = {k: v for k, v in ctx.hyper.items() if k != METHOD_NAME}
    hyper = {**AP_DEFAULTS, "alpha_steps": alpha_steps(ctx.experiment), **base, **own}
    how = None
    if "exploration" in hyper:
        how = ExplorationConfig(strategy=str(hyper.pop("exploration")),
                                epsilon=float(hyper.pop("epsilon", 0.1)))
    hyper.pop("epsilon", None)
    return hyper, how


_SWITCHES = {f.name for f in fields(JudgeSpec) if f.type in ("bool", bool)}
"""JudgeSpec fields that are command-line switches (``--no-cache``): no value."""


def judge_options(setting: str) -> str:
    """Judge command-line options of a ``judge`` setting: ``kind[:field=value,...]`` with
    :class:`policy.judge.spec.JudgeSpec` fields (``hf:model_path=smollm2``), or options
    as given when the setting starts with ``-`` (``--judge hf --model-path smollm2``)."""
    text = setting.strip()
    if not text or text.startswith("-"):
        return text
    kind, _, rest = text.partition(":")
    args = ["--judge", kind.strip()]
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        flag = "--" + key.replace("_", "-")
        if key in _SWITCHES:
            if not eq or value.strip().lower() in ("1", "true", "yes", "on"):
                args.append(flag)
            continue
        if not eq:
            raise ValueError(f"judge option {part!r} needs a value ({key}=...)")
        args += [flag, value.strip()]
    return shlex.join(args)


def build_judge(setting: str, env_name: str, item_text: Any) -> BaseJudge:
    """The reference policy's judge for dataset ``env_name``."""
    if item_text is None:
        raise ValueError(f"environment {env_name!r} has no item texts for the judge")
    try:
        return JudgeSpec.parse(judge_options(setting)).build(env_name, item_text)
    except JudgeSpecError as exc:
        raise ValueError(f"laac: judge {setting!r}: {exc}") from exc


# -- the trained actor: cached ------------------------------------------------------------
def logs_digest(logs: list[np.ndarray]) -> str:
    """A hash of the training logs (their order and every item)."""
    h = hashlib.sha1()
    for seq in logs:
        arr = np.asarray(seq, dtype=np.int64)
        h.update(np.int64(len(arr)).tobytes() + arr.tobytes())
    return h.hexdigest()


def laac_cache_path(env_name: str, seed: int, policy_config: PolicyConfig, config: LAACConfig,
                    digest: str, item_features: ItemFeatures | None = None) -> Path:
    """Folder of the cached LAAC actor for these inputs (``.../policy`` is the checkpoint)."""
    ident_doc: dict[str, Any] = {"format": _FORMAT, "env": env_name, "seed": seed,
                                 "policy": policy_config.to_dict(), "laac": asdict(config),
                                 "logs": digest}
    return cache_folder("laac-policy", env_name, ident_doc, item_features)


def load_or_train(ctx: MethodContext, config: LAACConfig, *, progress: bool = True
                  ) -> tuple[MixedPolicy, dict[str, Any]]:
    """The LAAC actor of this run (from the cache, or trained now) and its report."""
    env_name = ctx.train_env.name.removesuffix("-train")  # "<dataset>-train"
    logs = ctx.training_logs()
    out = laac_cache_path(env_name, ctx.seed, ctx.policy_config, config, logs_digest(logs),
                          ctx.item_features)
    ckpt, report_file = out / "policy", out / "laac.json"
    if not (ckpt.exists() and report_file.exists()):
        judge = build_judge(config.judge, env_name, ctx.train_env.item_text)
        log.info("training LAAC on %s (seed %d) into %s", env_name, ctx.seed, out)
        try:
            policy, report = train_laac(
                logs, [int(u) for u in ctx.train_env.users], ctx.policy_config,
                seed=ctx.seed, judge=judge, item_features=ctx.item_features, config=config,
                progress=progress, dllm_cache=cache_dir() / "laac-dllm", cache_tag=env_name)
        finally:
            judge.close()

        def write(folder: Path) -> None:
            save_checkpoint(policy, folder / "policy")
            (folder / "laac.json").write_text(json.dumps(
                {"env": env_name, "seed": ctx.seed,
                 "policy_config": ctx.policy_config.to_dict(), "report": report},
                indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")

        write_atomically(out, write)
    report = json.loads(report_file.read_text(encoding="utf-8"))["report"]
    memo = str(ckpt.resolve())
    if memo not in _MEMO:
        _MEMO[memo] = load_checkpoint(ckpt, expected_num_items=ctx.policy_config.num_items)
    policy = _MEMO[memo]
    if policy.config != ctx.policy_config:
        raise ValueError(f"LAAC checkpoint {ckpt} has network {policy.config}, but the "
                         f"experiment builds {ctx.policy_config}")
    ctx.notes[METHOD_NAME] = report
    ctx.notes["pretrain"] = {k: report[k] for k in SUMMARY_KEYS if k in report}
    # A fresh wrapper each time: agents may change its exploration.
    return MixedPolicy(policy.theta, version=policy.version, metadata=policy.metadata,
                       exploration=policy.exploration, seed=ctx.seed), report


# -- agents ---------------------------------------------------------------------------------
class LAACAgent(FrozenAgent):
    """The LAAC actor, frozen, acting greedily; reports its offline training."""

    def __init__(self, name: str, policy: MixedPolicy, config: OnlineConfig,
                 report: dict[str, Any]) -> None:
        super().__init__(name, policy, config, greedy=True)
        self._report = report

    def report(self) -> dict[str, Any]:
        """LAAC's training report (losses per epoch, D_LLM, anchoring gap, extremes)."""
        return {METHOD_NAME: self._report}


class LAACAPAgent(ExploringAgent):
    """A-iALP_ap's learner adapting online from the LAAC actor as θ."""

    def __init__(self, name: str, learner: Learner, config: OnlineConfig, *, seed: int,
                 report: dict[str, Any], exploration: ExplorationConfig | None = None
                 ) -> None:
        super().__init__(name, learner, config, seed=seed, exploration=exploration)
        self._report = report

    def report(self) -> dict[str, Any]:
        """LAAC's training report behind θ."""
        return {METHOD_NAME: self._report}


def make_laac_agent(ctx: MethodContext) -> Agent:
    """Method factory for ``laac``."""
    policy, report = load_or_train(ctx, laac_settings(ctx))
    return LAACAgent(ctx.name, policy, ctx.experiment.online, report)


def make_laac_ap_agent(ctx: MethodContext) -> Agent:
    """Method factory for ``laac-ap``."""
    hyper, how = ap_settings(ctx)
    theta, report = load_or_train(ctx, laac_settings(ctx))
    if how is not None:
        theta.exploration = replace(theta.exploration, strategy=how.strategy,
                                    epsilon=how.epsilon)
    learner = make_learner("ap", ctx.policy_config, seed=ctx.seed, init=theta, **hyper)
    return LAACAPAgent(ctx.name, learner, ctx.experiment.online, seed=ctx.seed + 1,
                       report=report, exploration=how)


register_method(METHOD_NAME, make_laac_agent)
register_method(AP_METHOD, make_laac_ap_agent)

__all__ = ["ALPHA_HANDOVER", "AP_DEFAULTS", "AP_METHOD", "LAACAPAgent", "LAACAgent",
           "alpha_steps", "ap_settings", "build_judge", "judge_options", "laac_cache_path",
           "laac_settings", "load_or_train", "logs_digest"]

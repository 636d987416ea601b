"""LAAC's settings: :class:`LAACConfig` (the ``laac`` hyperparameters), the method's name
and the ways negatives may be drawn. Why each default is what it is: the package docstring
(:mod:`trainer.laac`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policy.settings import settings_from

METHOD_NAME = "laac"
NEGATIVE_SAMPLING = ("uniform", "popularity")


@dataclass(frozen=True)
class LAACConfig:
    """Settings of LAAC's offline training (``--hyper '{"laac": {...}}'``)."""

    epochs: int = 6
    """Most passes over (a random subset of at most ``max_examples``) logged transitions;
    the best held-out epoch is kept (``holdout``, ``patience``)."""
    max_examples: int = 40_000
    """At most this many logged transitions per epoch (a fresh random subset each)."""
    batch_size: int = 256
    """Logged transitions per gradient step."""
    llm_batch_size: int = 64
    """D_LLM states per gradient step (drawn with replacement)."""
    lr_actor: float = 1e-3
    """Adam learning rate of the actor head."""
    lr_critic: float = 1e-3
    """Adam learning rate of the critic head and the shared encoder."""
    gamma: float = 0.9
    """Discount γ of the Bellman target (the online learners' γ)."""
    beta: float = 10.0
    """Weight of the Bellman term in the critic loss."""
    pessimism: float = 1.0
    """Weight of the relative-pessimism term E[Σ_a π f(s,a) − f(s, a_ref)]."""
    lam: float = 1.0
    """Weight λ of the anchoring term on unexplored LLM suggestions (0 = no anchoring)."""
    tau: float = 0.01
    """Polyak rate of the target network."""
    negatives: int = 4
    """Never-consumed items per logged transition, stored with r = 0 and terminal."""
    negative_sampling: str = "uniform"
    """How negatives are drawn: ``uniform`` over the catalogue, or ``popularity``
    (in proportion to the training-log counts + 1)."""
    llm_states: int = 2_000
    """Logged states the reference policy is asked about (the size of D_LLM before
    None answers are dropped)."""
    k: int = 10
    """Candidates per judge prompt."""
    judge: str = "embedding"
    """Judge the experiment method builds: ``embedding`` (offline sentence-encoder judge),
    ``kind:option=value,...`` with :class:`policy.judge.spec.JudgeSpec` fields (e.g.
    ``hf:model_path=smollm2``), or judge command-line options (``--judge hf ...``). The
    trainer receives the judge built; the string names it in caches and reports."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus of π in the actor loss."""
    bc_coef: float = 1.0
    """Weight of the cross-entropy of π towards the reference actions (logged and LLM)."""
    holdout: float = 0.1
    """Share of the training users held out for model selection: after each epoch the
    actor's next-item cross-entropy on their logged transitions is measured, the best
    epoch is kept and training stops after ``patience`` epochs without improvement
    (0: no hold-out, the last epoch is kept)."""
    patience: int = 1
    """Epochs without a lower held-out cross-entropy before training stops."""
    mask_history: bool = True
    """π ranges over items outside the state only, as the deployed policy acts."""
    grad_clip: float = 5.0
    """Global gradient-norm clip (0 = none)."""

    def __post_init__(self) -> None:
        if min(self.epochs, self.max_examples, self.batch_size, self.llm_batch_size,
               self.k) < 1:
            raise ValueError("epochs, max_examples, batch_size, llm_batch_size and k must be "
                             ">= 1")
        if self.lr_actor <= 0 or self.lr_critic <= 0:
            raise ValueError("lr_actor and lr_critic must be positive")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError("gamma must lie in [0, 1)")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must lie in (0, 1]")
        if min(self.beta, self.pessimism, self.lam, self.entropy_coef, self.bc_coef,
               self.grad_clip) < 0 or self.negatives < 0 or self.llm_states < 0:
            raise ValueError("beta, pessimism, lam, entropy_coef, bc_coef, grad_clip, "
                             "negatives and llm_states must be >= 0")
        if not 0.0 <= self.holdout < 1.0 or self.patience < 1:
            raise ValueError("holdout must lie in [0, 1) and patience be >= 1")
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(f"negative_sampling must be one of {', '.join(NEGATIVE_SAMPLING)}"
                             f", not {self.negative_sampling!r}")

    @classmethod
    def from_hyper(cls, hyper: Mapping[str, Any]) -> LAACConfig:
        """The config of a ``--hyper`` mapping; unknown keys are an error naming the known."""
        return settings_from(cls, hyper, METHOD_NAME)

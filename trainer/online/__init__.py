"""The online trainer: feedback stream in, new policy versions out.

* :mod:`.settings` — ``TrainerSettings`` (``IALP_*``);
* :mod:`.state` — what a restart resumes from;
* :mod:`.metrics` — Prometheus metrics;
* :mod:`.loop` — ``TrainerService``: read, commit, learn, quarantine, publish, resync;
* :mod:`.process` — ``run_trainer``, the ``ialp trainer`` process.
"""

from trainer.online.loop import NonFinitePolicyError, TrainerService
from trainer.online.metrics import TrainerMetrics
from trainer.online.process import run_trainer
from trainer.online.settings import TrainerSettings
from trainer.online.state import POLICY_DIR, STATE_FILE, TrainerState

__all__ = ["POLICY_DIR", "STATE_FILE", "NonFinitePolicyError", "TrainerMetrics",
           "TrainerService", "TrainerSettings", "TrainerState", "run_trainer"]

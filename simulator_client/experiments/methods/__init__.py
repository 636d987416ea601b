"""The built-in experiment methods; importing this package registers them.

* :mod:`.ialp` — frozen iALP (greedy and sampled), A-iALP_ft, A-iALP_ap and their
  exploration variants;
* :mod:`.vw_bandit` — the Vowpal Wabbit contextual-bandit peer (``vw-bandit``);
* :mod:`.llm_online` — the judge consulted online as a sub-agent (``llm-online``);
* :mod:`.supervised` — the supervised SASRec next-item peer and the popularity list.
"""

from simulator_client.experiments.methods import gee, ialp, llm_online, supervised, vw_bandit

__all__ = ["gee", "ialp", "llm_online", "supervised", "vw_bandit"]

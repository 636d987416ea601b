"""The built-in experiment methods; importing this package registers them.

* :mod:`.ialp` — frozen iALP (greedy and sampled), A-iALP_ft, A-iALP_ap and their
  exploration variants;
* :mod:`.vw_bandit` — the Vowpal Wabbit contextual-bandit peer (``vw-bandit``);
* :mod:`.llm_online` — the judge consulted online as a sub-agent (``llm-online``);
* :mod:`.supervised` — the supervised SASRec next-item peer and the popularity list;
* :mod:`.laac` — LAAC, the LLM-guided adversarial actor-critic (``laac``, ``laac-ap``);
* :mod:`.gee` — Generative Explore-Exploit and its ablations (``gee``, ``gee-exploit``,
  ``gee-random-ctr``, ``gee-no-drop``).
"""

from simulator_client.experiments.methods import gee, ialp, laac, llm_online, supervised, vw_bandit

__all__ = ["gee", "ialp", "laac", "llm_online", "supervised", "vw_bandit"]

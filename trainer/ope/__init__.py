"""Off-policy evaluation (OPE) of candidate policies from logged decisions.

* :mod:`trainer.ope.estimators`: the estimators on plain arrays (IPS, SNIPS, DR per
  decision; PDIS, WPDIS, DR per trajectory), weight clipping, effective sample size and
  bootstrap confidence intervals. Pure numpy.
* :mod:`trainer.ope.candidate`: what a candidate :class:`~policy.mixed.MixedPolicy` would
  do on the logged states (its full action distribution, exploration included) and the
  direct models of DR (a reward model fitted on the logs, or the candidate's critic).
* :mod:`trainer.ope.logs`: logged transitions from the Redis feedback stream or a JSON
  lines export, and the report of ``ialp ope``.

See docs/ope.md for the estimands, the assumptions and the validation on the simulators.
"""

"""Fault injection against the real processes: the harness of ``docs/reliability.md``.

Tests and benchmarks both drive these: :mod:`processes` (API replicas and a trainer as
child processes, traffic helpers, learned-event counts), :mod:`scenarios` (trainer kill,
Redis restart, replica kill), :mod:`redis_proxy` (a TCP proxy between a client and Redis
that drops, delays or cuts chosen replies), :mod:`lost_replies` (exactly-once under lost
replies on every command of the trainer's cycle) and :mod:`fuzz` (schema-driven fuzzing
of the OpenAPI document; needs the ``dev`` extra for hypothesis).
"""

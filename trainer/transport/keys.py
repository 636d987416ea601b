"""Redis key names of one deployment, all under a namespace prefix.

Two deployments (or a test and a demo) can share one Redis server as long as their
namespaces differ; nothing in the service writes a key outside its prefix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    """Every Redis key the API and the trainer use."""

    namespace: str = "ialp"
    """Prefix of every key, e.g. ``ialp`` or ``shop-eu``."""

    def _k(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    @property
    def stream(self) -> str:
        """Stream of feedback transitions (API → trainer)."""
        return self._k("feedback")

    @property
    def dead_letter(self) -> str:
        """Stream where entries that failed too many deliveries are parked."""
        return self._k("feedback", "dead")

    def decision(self, event_id: str) -> str:
        """The decision made for ``event_id`` (state, slate, propensities, version)."""
        return self._k("decision", event_id)

    def feedback_seen(self, event_id: str) -> str:
        """Marker that feedback for ``event_id`` was enqueued (API-side de-duplication)."""
        return self._k("fb", event_id)

    def learned(self, event_id: str) -> str:
        """Marker that the trainer put ``event_id`` in its replay buffer."""
        return self._k("learned", event_id)

    @property
    def awaiting_feedback(self) -> str:
        """Sorted set event id → deadline for the optional default reward."""
        return self._k("awaiting")

    @property
    def enqueued_total(self) -> str:
        """Counter of transitions enqueued on the stream."""
        return self._k("stats", "enqueued")

    @property
    def trainer_buffer(self) -> str:
        """Durable buffer of acknowledged transitions not yet used by an update: sorted
        set event id → commit sequence (the order); payloads in :attr:`trainer_buffer_data`."""
        return self._k("trainer", "buffer")

    @property
    def trainer_buffer_data(self) -> str:
        """Hash event id → transition JSON of the durable buffer."""
        return self._k("trainer", "buffer", "data")

    @property
    def trainer_stats(self) -> str:
        """Hash of trainer counters (events learned, updates, duplicates, ...)."""
        return self._k("trainer", "stats")

    @property
    def ab_stats(self) -> str:
        """Hash of per-arm feedback counters (``<arm>:n``, ``:sum``, ``:sumsq``)."""
        return self._k("ab", "stats")

    @property
    def ab_popularity(self) -> str:
        """Hash item → positive feedback count (the ``popular`` A/B arm)."""
        return self._k("ab", "popularity")

    # policy publication
    @property
    def policy_current(self) -> str:
        """Version number every API replica should serve."""
        return self._k("policy", "current")

    @property
    def policy_seq(self) -> str:
        """Counter that hands out new version numbers."""
        return self._k("policy", "seq")

    @property
    def policy_candidate(self) -> str:
        """Version published as a candidate: evaluated (promotion gate, shadow mode)
        before it may become current."""
        return self._k("policy", "candidate")

    @property
    def policy_log(self) -> str:
        """Stream of deployment events: promotions, rejections, rollbacks."""
        return self._k("policy", "log")

    @property
    def policy_versions(self) -> str:
        """List of kept version numbers, oldest first."""
        return self._k("policy", "versions")

    def policy_blob(self, version: int) -> str:
        """Serialized policy (weights + α + metadata) of ``version``."""
        return self._k("policy", "blob", str(version))

    def policy_meta(self, version: int) -> str:
        """JSON metadata of ``version`` (readable without loading the weights)."""
        return self._k("policy", "meta", str(version))

    @property
    def policy_channel(self) -> str:
        """Pub/sub channel announcing a new current version."""
        return self._k("policy", "events")

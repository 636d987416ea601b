"""Settings every process of one deployment shares (API replicas and the trainer).

Each is one ``IALP_*`` environment variable read the same way by ``ialp serve`` and
``ialp trainer``, so one environment configures both; the processes add their own
settings on top (``app.settings.ServiceSettings``, ``trainer.online.TrainerSettings``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.transport.client import wants_cluster
from trainer.transport.shards import Shards


class DeploymentSettings(BaseSettings):
    """Where the deployment's Redis is, its key prefix, and the fallback policy."""

    model_config = SettingsConfigDict(env_prefix="IALP_", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis URL; unset starts (or reuses) an embedded redis-server.")
    redis_cluster: bool = Field(
        default=False, description="The Redis URL names a Redis Cluster (also implied by "
        "a redis+cluster:// URL): cluster client, every key hash-tagged.")
    stream_shards: int = Field(
        default=1, ge=1, le=1024, description="Feedback streams (shards, by user); 1: the "
        "single-stream key layout. Same value in every API replica and the trainer; "
        "change it only on a drained deployment.")
    embedded_redis_port: int = Field(
        default=6399, description="Port of the embedded redis-server.")
    embedded_redis_dir: Path | None = Field(
        default=None, description="Data folder of the embedded redis-server "
        "(default $IALP_CACHE_DIR/redis).")
    namespace: str = Field(
        default="ialp", pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every Redis key of this deployment.")
    num_items: int = Field(
        default=300, ge=1, description="Catalogue size of the untrained policy used "
        "when no checkpoint is given (demos, tests).")
    max_len: int = Field(default=50, ge=1, description="History window of that policy.")
    seed: int = Field(default=0, description="Seed of the untrained policy, of sampling and "
                      "of learning.")
    torch_threads: int = Field(default=1, ge=1, description="Intra-op threads of torch.")
    keep_versions: int = Field(default=5, ge=1,
                               description="Policy versions kept for rollback.")
    dedup_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="How long an event id is remembered "
        "for de-duplication and as learned (keep it >= decision_ttl_s).")

    def shards(self, url: str | None = None) -> Shards:
        """The deployment's shard layout; ``url`` (default :attr:`redis_url`) names a
        cluster by its scheme."""
        url = url if url is not None else (self.redis_url or "")
        return Shards(self.namespace, self.stream_shards,
                      cluster=wants_cluster(url, self.redis_cluster))

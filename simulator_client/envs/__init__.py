"""Gym-shaped recommendation environments with a batched core."""

from simulator_client.envs.base import BatchObs, LeaveRule, RecBatchEnv, RecEnv, RewardModel

__all__ = ["BatchObs", "LeaveRule", "RecBatchEnv", "RecEnv", "RewardModel"]

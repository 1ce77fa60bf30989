"""Planners propose hypotheses: the offline planner (ideas backlog, then Optuna TPE) and, later, Claude."""

from .base import PlanContext, Planner
from .offline import OfflinePlanner

__all__ = ["OfflinePlanner", "PlanContext", "Planner"]

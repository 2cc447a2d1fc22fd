"""The MGT sampler engine and its design choices (design-choices.md sections 2-9)."""

from .schedules import BUILTIN_SCHEDULES, MaskSchedule, get_schedule, mask_counts

__all__ = ["BUILTIN_SCHEDULES", "MaskSchedule", "get_schedule", "mask_counts"]

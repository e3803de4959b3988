"""The zoo's tasks, by every class path a checkpoint may name them with.

Above the four tasks (it imports them), so that ``tasks.checkpoints.hparams``, which only
checks hyper-parameters, stays below them.
"""

from __future__ import annotations

from tasks.base import BaseTask
from tasks.classification import ClassificationTask
from tasks.detection import DetectionTask
from tasks.multitask import MultiTaskTask
from tasks.segmentation import SegmentationTask

TASKS: tuple[type[BaseTask], ...] = (
    ClassificationTask,
    DetectionTask,
    SegmentationTask,
    MultiTaskTask,
)


def registered_tasks() -> dict[str, type[BaseTask]]:
    """The zoo's tasks by every class path a checkpoint may name them with
    (``tasks.DetectionTask`` and ``tasks.detection.DetectionTask``): the only classes a
    checkpoint may name without the user's config naming them too."""
    return {
        path: cls
        for cls in TASKS
        for path in (f"tasks.{cls.__name__}", f"{cls.__module__}.{cls.__qualname__}")
    }

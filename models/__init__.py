"""One LightningModule per task; the networks live in ``models.architectures``."""

from .base import TaskModule, parameter_groups
from .classification import ClassificationTask
from .language_model import LanguageModelTask
from .segmentation import SegmentationTask
from .super_resolution import SuperResolutionTask

TASKS = {
    "classification": ClassificationTask,
    "segmentation": SegmentationTask,
    "super_resolution": SuperResolutionTask,
    "language_model": LanguageModelTask,
}

__all__ = ["TASKS", "ClassificationTask", "LanguageModelTask", "SegmentationTask", "SuperResolutionTask", "TaskModule", "parameter_groups"]

"""T2I-Adapter training (``train_adapter.py`` is the command line): dataset, trainer, demo dataset."""

from .dataset import AdapterDataset, DatasetError
from .demo_dataset import write_demo_dataset
from .trainer import TrainingError, TrainResult, TrainSettings, adapter_config_for, saved_steps, train

__all__ = [
    "AdapterDataset",
    "DatasetError",
    "TrainResult",
    "TrainSettings",
    "TrainingError",
    "adapter_config_for",
    "saved_steps",
    "train",
    "write_demo_dataset",
]

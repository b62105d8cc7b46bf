"""`fastsentiment train`: fine-tune a BERT-family encoder into a sequence classifier."""

from fastsentiment.train.config import TrainConfig
from fastsentiment.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]

"""`fastsentiment train`: fine-tune a BERT-family encoder into a sequence classifier."""

from fastsentiment.train.trainer import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]

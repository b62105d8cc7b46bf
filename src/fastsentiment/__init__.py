"""fastsentiment: BERT-family sentiment classifiers on the fastest backend each machine has."""

__version__ = "0.1.0"

from fastsentiment.classifier import Classifier, Prediction
from fastsentiment.errors import BackendError, FastSentimentError, InputError, ModelError

__all__ = [
    "BackendError",
    "Classifier",
    "FastSentimentError",
    "InputError",
    "ModelError",
    "Prediction",
    "__version__",
]

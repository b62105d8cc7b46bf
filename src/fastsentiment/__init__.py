"""fastsentiment: BERT-family sentiment classifiers on the fastest backend each machine has."""

__version__ = "0.1.0"

from fastsentiment.classifier import Classifier, Prediction
from fastsentiment.errors import FastSentimentError

__all__ = ["Classifier", "FastSentimentError", "Prediction", "__version__"]

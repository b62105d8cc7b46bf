"""Our re-implementation of Apple's Neural-Engine layout of BERT and DistilBERT, and its converter."""

from fastsentiment.models.ane.convert import ane_model_from_dir, convert_state_dict, encoder_config

__all__ = ["ane_model_from_dir", "convert_state_dict", "encoder_config"]

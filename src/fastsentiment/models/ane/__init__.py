"""Our re-implementation of Apple's Neural-Engine layout (BERT, DistilBERT, the RoBERTa family, MPNet, DeBERTa-v2),
and its converter."""

from fastsentiment.models.ane.convert import ane_model_from_dir, convert_state_dict, encoder_config

__all__ = ["ane_model_from_dir", "convert_state_dict", "encoder_config"]

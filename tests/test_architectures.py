"""The architecture descriptions read real Hugging Face configs the way transformers does."""

from dataclasses import replace

from fastsentiment.models import resolve_model
from fastsentiment.models.architectures import ARCHITECTURES, architecture_of


def test_encoder_shape_matches_transformers_config(tiny_model):
    from transformers import AutoConfig

    model = resolve_model(tiny_model)
    hf = AutoConfig.from_pretrained(tiny_model)
    # transformers' attribute_map gives every architecture the same attribute names.
    expected = {
        "layers": hf.num_hidden_layers,
        "hidden": hf.hidden_size,
        "heads": hf.num_attention_heads,
        "ffn": getattr(hf, "intermediate_size", None) or hf.hidden_dim,
    }
    assert model.encoder_shape == expected


def test_token_type_ids_follow_the_forward_signature(tiny_model):
    import inspect

    from transformers import AutoModelForSequenceClassification

    model = resolve_model(tiny_model)
    network = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    takes = "token_type_ids" in inspect.signature(network.forward).parameters
    assert model.uses_token_type_ids == takes


def test_positions_after_padding_shrink_the_token_limit():
    bert = ARCHITECTURES["bert"]
    assert bert.max_tokens({"max_position_embeddings": 512}) == 512
    # RoBERTa numbers positions from padding_idx + 1: 514 entries hold 512 tokens.
    shifted = replace(bert, positions_after_padding=True)
    assert shifted.position_offset({"pad_token_id": 1}) == 2
    assert shifted.max_tokens({"max_position_embeddings": 514, "pad_token_id": 1}) == 512


def test_unknown_architecture_has_no_description():
    assert architecture_of("gpt2") is None
    assert architecture_of("distilbert") is ARCHITECTURES["distilbert"]


def test_mpnet_numbers_positions_after_padding_index_1_whatever_pad_token_id_says():
    """Hugging Face's MPNet hard-codes padding_idx 1 for its position ids (RoBERTa takes pad_token_id)."""
    mpnet, roberta = ARCHITECTURES["mpnet"], ARCHITECTURES["roberta"]
    for pad in (0, 1, 5, None):
        config = {"max_position_embeddings": 514, "pad_token_id": pad, "vocab_size": 100}
        assert mpnet.position_offset(config) == 2 and mpnet.max_tokens(config) == 512
        assert mpnet.config_problem(config) is None
    assert roberta.max_tokens({"max_position_embeddings": 514, "pad_token_id": 0}) == 513
    assert "pad_token_id is None" in roberta.config_problem({"max_position_embeddings": 514, "pad_token_id": None})

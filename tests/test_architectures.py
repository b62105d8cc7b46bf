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


def test_the_defaults_are_those_of_transformers_config_classes():
    """Where config.json is silent, every backend builds what transformers builds: the ANE layout read a DeBERTa-v2
    config without max_position_embeddings as a KeyError, and one without layer_norm_eps with BERT's 1e-12."""
    from transformers import AutoConfig

    for model_type, architecture in ARCHITECTURES.items():
        hf = AutoConfig.for_model(model_type)
        keys = {
            *architecture.defaults,
            "max_position_embeddings",
            "vocab_size",
            "pad_token_id",
            architecture.activation_key,
        }
        keys |= {architecture.layer_norm_eps_key} - {None}
        assert {key: architecture.defaults.get(key) for key in keys} == {key: getattr(hf, key) for key in keys}, (
            model_type
        )
        assert architecture.max_tokens({}) == hf.max_position_embeddings - architecture.position_offset({})


def test_values_of_a_type_transformers_refuses_are_refused_by_the_config_check():
    from transformers import AutoConfig

    deberta = ARCHITECTURES["deberta-v2"]
    for model_type, key, value in [
        ("bert", "layer_norm_eps", "1e-12"),
        ("bert", "layer_norm_eps", None),
        ("bert", "layer_norm_eps", 1),
        ("roberta", "hidden_act", None),
        ("distilbert", "activation", None),
        ("deberta-v2", "pooler_hidden_act", None),
        ("deberta-v2", "layer_norm_eps", None),
    ]:
        problem = ARCHITECTURES[model_type].config_problem({key: value})
        assert problem is not None and problem.startswith(f"{key} is {value!r}: expected "), (model_type, key, value)
        try:
            AutoConfig.for_model(model_type, **{key: value})
        except Exception as error:  # huggingface_hub's strict field checks
            assert "expected" in str(error), error
        else:
            raise AssertionError(f"transformers took {key}={value!r}")
    # conv_act is read only with a convolution, and transformers' config class takes any value of it
    assert deberta.config_problem({"conv_act": None}) is None
    assert ARCHITECTURES["bert"].config_problem({"layer_norm_eps": 1e-5, "hidden_act": "gelu_new"}) is None

"""One description per supported architecture: everything the rest of the code needs to know about it.

Model-directory validation, tokenization, the ONNX exporter (and ONNX Runtime's optimiser), the
torch backend and the ANE converter ask the `Architecture` of a model instead of branching on its
`model_type`. Adding an architecture is one entry in `ARCHITECTURES` (plus, for the Neural Engine,
one module under models/ane/ named by `ane_module`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastsentiment.checks import is_count


@dataclass(frozen=True)
class Architecture:
    """How one Hugging Face `model_type` is laid out and what it takes as input."""

    model_type: str
    # config.json keys for the encoder's shape, in the order they are tried.
    layers_keys: tuple[str, ...]
    hidden_keys: tuple[str, ...]
    heads_keys: tuple[str, ...]
    ffn_keys: tuple[str, ...]
    # The forward pass takes token_type_ids (all zeros for single sentences); DistilBERT's rejects them.
    token_type_ids: bool
    # Classifier head on the first token: "pooler" (dense → tanh → classifier, BERT),
    # "pre_classifier" (dense → ReLU → classifier, DistilBERT), "dense_tanh" (dense → tanh → out_proj,
    # RoBERTa / MPNet), "context_pooler" (dense → activation → classifier, DeBERTa-v2).
    head: str
    # model_type understood by onnxruntime.transformers.optimizer for its fusions; None: no fusion pass.
    ort_model_type: str | None
    # Position ids start after the padding index (RoBERTa: padding_idx + 1), so this many entries of
    # the position table are never used by a token.
    positions_after_padding: bool = False
    # The padding index that positions are numbered after, where the architecture fixes it whatever config.json's
    # pad_token_id says (Hugging Face's MPNet hard-codes 1); None: pad_token_id is that index.
    position_padding_idx: int | None = None
    activation_key: str = "hidden_act"
    # Further config.json keys naming activations the ANE layout computes (DeBERTa-v2's pooler and convolution).
    more_activation_keys: tuple[str, ...] = ()
    layer_norm_eps_key: str | None = "layer_norm_eps"
    # Dotted module under fastsentiment.models.ane holding the ANE-layout model and its weight-name tables.
    ane_module: str | None = None
    # Why a CoreML package of this architecture holds one sequence length only (None: it may hold several).
    coreml_one_length: str | None = None
    # The tokenizer class transformers' AutoTokenizer builds for this model_type when neither tokenizer_config.json
    # nor config.json names one (TOKENIZER_MAPPING_NAMES in transformers/models/auto/tokenization_auto.py).
    tokenizer_class: str = "BertTokenizer"
    # Part of the name of its cached ONNX exports: raised when the exporter's graph of this architecture changes, so
    # that caches of earlier versions are not loaded, and for it alone (an install without torch runs cached exports
    # and cannot make new ones). 2: MPNet's buckets by table, plain graphs finite in bf16; 3: DeBERTa-v2's too.
    export_revision: int = 2
    # Part of the name of its cached CoreML packages from the second on: raised when the ANE layout of this
    # architecture changes, so that packages converted by an earlier version are not loaded (MPNet 2: positions
    # after padding index 1 whatever pad_token_id says).
    ane_revision: int = 1
    # config.json keys with the least value the architecture's own code indexes with, and why (MPNet looks distances up
    # in 32 rows of its bias table whatever relative_attention_num_buckets says: fewer was an index error).
    least_values: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Backend name -> one-line reason it cannot run this architecture.
    unsupported_backends: dict[str, str] = field(default_factory=dict)
    # What transformers' config class of this model_type takes where config.json is silent, for the keys read here:
    # the ANE layout and the checks below build the model transformers builds (a DeBERTa-v2 config without
    # max_position_embeddings was a KeyError on ane, and one without layer_norm_eps got BERT's 1e-12, not 1e-7).
    defaults: dict[str, Any] = field(default_factory=dict)

    def with_defaults(self, config: dict[str, Any]) -> dict[str, Any]:
        """config.json with transformers' defaults for the keys it leaves out."""
        return {**self.defaults, **config}

    def encoder_shape(self, config: dict[str, Any]) -> dict[str, int]:
        """Layers, hidden size, attention heads and feed-forward size from a config.json."""
        config = self.with_defaults(config)
        keys = {"layers": self.layers_keys, "hidden": self.hidden_keys, "heads": self.heads_keys, "ffn": self.ffn_keys}
        return {name: int(_first(config, options)) for name, options in keys.items()}

    def config_problem(self, config: dict[str, Any]) -> str | None:
        """What in a config.json this architecture cannot run with, or None: checked when a model directory is
        loaded, so that a bad value is one line there instead of a traceback from whichever runtime meets it."""
        if problem := self._type_problem(config):
            return problem
        pad = self.with_defaults(config).get("pad_token_id", 1)
        if self.positions_after_padding and self.position_padding_idx is None and not is_count(pad, least=0):
            return f"pad_token_id is {pad!r}: {self.model_type} models number their positions from it, an integer"
        sizes = ["max_position_embeddings", "vocab_size", "num_labels"]
        sizes += [next((key for key in keys if key in config), keys[0]) for keys in self._shape_keys]
        for key in sizes:
            if key in config and not is_count(config[key], least=1):
                return f"{key} is {config[key]!r}: expected a whole number of at least 1"
        for key, (least, why) in self.least_values.items():
            if key in config and not is_count(config[key], least=least):
                return f"{key} is {config[key]!r}: {why}, so at least {least}"
        shape = self.encoder_shape(config)
        if shape["hidden"] and shape["heads"] and shape["hidden"] % shape["heads"]:
            return f"the hidden size {shape['hidden']} is not a multiple of the {shape['heads']} attention heads"
        if pad is not None and not is_count(pad, least=0):
            return f"pad_token_id is {pad!r}: expected a token id"
        vocabulary = config.get("vocab_size")
        if isinstance(vocabulary, int) and isinstance(pad, int) and pad >= vocabulary:
            return f"pad_token_id {pad} is not a token of the {vocabulary}-token vocabulary"
        if (room := self.max_tokens(config)) < 3:
            return f"max_position_embeddings leaves room for {room} tokens; a text takes at least 3 ([CLS] text [SEP])"
        return None

    def _type_problem(self, config: dict[str, Any]) -> str | None:
        """A value of a type transformers' config class refuses (its strict fields: a float eps, not an int, and an
        activation's name), said in one line on every backend, not only where transformers reads it."""
        eps = self.layer_norm_eps_key
        if eps is not None and eps in config and not isinstance(config[eps], float):
            return f"{eps} is {config[eps]!r}: expected a decimal number (such as 1e-12)"
        for key in (self.activation_key, *self.more_activation_keys):
            # A key without a default (DeBERTa-v2's conv_act) is no field of the config class: read only with a
            # convolution, where its name is checked with the others' (ane_layout_problem, transformers' ACT2FN).
            if key in self.defaults and key in config and not isinstance(config[key], str):
                return f"{key} is {config[key]!r}: expected the name of an activation function"
        return None

    @property
    def _shape_keys(self) -> tuple[tuple[str, ...], ...]:
        return (self.layers_keys, self.hidden_keys, self.heads_keys, self.ffn_keys)

    def position_offset(self, config: dict[str, Any]) -> int:
        """Entries of the position table no token uses (RoBERTa: padding_idx + 1, usually 2; MPNet: always 2)."""
        if not self.positions_after_padding:
            return 0
        if self.position_padding_idx is not None:
            return self.position_padding_idx + 1
        return int(self.with_defaults(config).get("pad_token_id", 1)) + 1

    def max_tokens(self, config: dict[str, Any]) -> int:
        """Longest token sequence the position table allows, special tokens included."""
        return int(self.with_defaults(config).get("max_position_embeddings", 512)) - self.position_offset(config)


def _first(config: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in config:
            return config[key]
    return 0


# transformers' BertConfig defaults, which its RoBERTa-like and MPNet configs share but for what each entry changes.
_BERT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

ARCHITECTURES: dict[str, Architecture] = {
    arch.model_type: arch
    for arch in (
        Architecture(
            model_type="bert",
            layers_keys=("num_hidden_layers",),
            hidden_keys=("hidden_size",),
            heads_keys=("num_attention_heads",),
            ffn_keys=("intermediate_size",),
            token_type_ids=True,
            head="pooler",
            ort_model_type="bert",
            ane_module="bert",
            defaults=_BERT_DEFAULTS,
        ),
        Architecture(
            model_type="distilbert",
            layers_keys=("n_layers",),
            hidden_keys=("dim",),
            heads_keys=("n_heads",),
            ffn_keys=("hidden_dim",),
            token_type_ids=False,
            head="pre_classifier",
            ort_model_type="bert",
            activation_key="activation",
            # DistilBERT's LayerNorms use eps 1e-12, which its config does not store.
            layer_norm_eps_key=None,
            ane_module="distilbert",
            defaults={
                "vocab_size": 30522,
                "dim": 768,
                "n_layers": 6,
                "n_heads": 12,
                "hidden_dim": 3072,
                "activation": "gelu",
                "max_position_embeddings": 512,
                "pad_token_id": 0,
            },
        ),
        *(
            Architecture(
                model_type=model_type,
                layers_keys=("num_hidden_layers",),
                hidden_keys=("hidden_size",),
                heads_keys=("num_attention_heads",),
                ffn_keys=("intermediate_size",),
                # RoBERTa checkpoints have a one-row token-type table; the graph still takes the input.
                token_type_ids=False,
                head="dense_tanh",
                ort_model_type="bert",
                positions_after_padding=True,
                ane_module="roberta",
                tokenizer_class=tokenizer_class,
                defaults={**_BERT_DEFAULTS, "vocab_size": vocab_size, "pad_token_id": 1},
            )
            for model_type, tokenizer_class, vocab_size in (
                ("roberta", "RobertaTokenizer", 50265),
                ("camembert", "CamembertTokenizer", 30522),
                ("xlm-roberta", "XLMRobertaTokenizer", 30522),
            )
        ),
        Architecture(
            model_type="mpnet",
            layers_keys=("num_hidden_layers",),
            hidden_keys=("hidden_size",),
            heads_keys=("num_attention_heads",),
            ffn_keys=("intermediate_size",),
            token_type_ids=False,
            head="dense_tanh",
            # ONNX Runtime's BERT fusions do not know MPNet's relative-position attention bias.
            ort_model_type=None,
            positions_after_padding=True,
            position_padding_idx=1,
            ane_module="mpnet",
            ane_revision=2,
            least_values={"relative_attention_num_buckets": (32, "MPNet buckets distances into 32 rows of its table")},
            tokenizer_class="MPNetTokenizer",
            defaults={
                **{key: value for key, value in _BERT_DEFAULTS.items() if key != "type_vocab_size"},
                "vocab_size": 30527,
                "pad_token_id": 1,
                "relative_attention_num_buckets": 32,
            },
        ),
        Architecture(
            model_type="deberta-v2",
            layers_keys=("num_hidden_layers",),
            hidden_keys=("hidden_size",),
            heads_keys=("num_attention_heads",),
            ffn_keys=("intermediate_size",),
            token_type_ids=False,
            head="context_pooler",
            ort_model_type=None,
            more_activation_keys=("pooler_hidden_act", "conv_act"),
            ane_module="deberta_v2",
            tokenizer_class="DebertaV2Tokenizer",
            export_revision=3,
            coreml_one_length="its relative-position terms are built for one sequence length when it is traced",
            defaults={
                "vocab_size": 128100,
                "hidden_size": 1536,
                "num_hidden_layers": 24,
                "num_attention_heads": 24,
                "intermediate_size": 6144,
                "hidden_act": "gelu",
                "max_position_embeddings": 512,
                "type_vocab_size": 0,
                "layer_norm_eps": 1e-7,
                "pad_token_id": 0,
                "pooler_hidden_act": "gelu",
                "relative_attention": False,
                "max_relative_positions": -1,
                "position_biased_input": True,
            },
        ),
    )
}


def architecture_of(model_type: str) -> Architecture | None:
    """The description of `model_type`, or None when fastsentiment does not run it."""
    return ARCHITECTURES.get(model_type)


# The activations models/ane/layers.py computes (Hugging Face's names; gelu_fast and gelu_new are one formula).
ANE_ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish", "tanh")


def ane_layout_problem(model_type: str, config: dict[str, Any] | None = None) -> str | None:
    """Why a model of `model_type` (with this config.json) cannot take the Neural-Engine layout (the ane and coreml
    backends), or None when it can."""
    architecture = ARCHITECTURES.get(model_type)
    if architecture is None or architecture.ane_module is None:
        covered = ", ".join(name for name, arch in ARCHITECTURES.items() if arch.ane_module)
        return f"no Neural-Engine layout for {model_type} models (the ANE layout covers {covered})"
    for key in (architecture.activation_key, *architecture.more_activation_keys):
        name = (config or {}).get(key)
        if name is not None and name not in ANE_ACTIVATIONS:
            return f"the ANE layout has no {name!r} activation (config.json {key}; it computes {', '.join(ANE_ACTIVATIONS)})"
    return None

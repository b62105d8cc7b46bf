"""A validated Hugging Face sequence-classification model directory.

Everything downstream (tokenizer, backends, exporters) takes a `ModelDir`, so the checks a user
can fail (missing files, malformed config, unsupported architecture) happen once, up front, and
produce one readable error instead of a traceback deep inside a runtime.
"""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from fastsentiment.cache import file_stamp, remembered
from fastsentiment.errors import InputError, ModelError
from fastsentiment.labels import distinct_names, generic_names
from fastsentiment.models.architectures import ARCHITECTURES, Architecture

SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
# Checkpoints of an encoder as pre-trained (BertModel, RobertaForMaskedLM): what `train --base-model` starts from.
PRETRAINED_ENCODERS = ("Model", "ForMaskedLM", "ForPreTraining")
# The weights, in the order transformers looks for them: one file, or the index of a checkpoint saved in shards
# (save_pretrained's max_shard_size), whose weight_map names the shard that holds each tensor.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
SHARD_INDEX_SUFFIX = ".index.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# The tokens a slow tokenizer's save_pretrained added to vocab.txt (a fine-tune's "@user"), by id: read with vocab.txt
# where tokenizer_config.json has no added_tokens_decoder, as transformers reads it. Optional, as the settings are.
ADDED_TOKENS_FILE = "added_tokens.json"
TOKENIZER_SETTINGS = ("tokenizer_config.json", "special_tokens_map.json", ADDED_TOKENS_FILE)
# What a model directory is made of, as downloaded from the hub and as shipped (safetensors weights).
MODEL_FILES = ("config.json", WEIGHT_FILES[0], *TOKENIZER_FILES, *TOKENIZER_SETTINGS)
# What is downloaded of a hub repository (allow_patterns): MODEL_FILES with safetensors weights in shards too, as
# save_pretrained names them; PYTORCH_HUB_FILES only from a repository without safetensors weights (resolve.py).
HUB_FILES = (*MODEL_FILES, WEIGHT_FILES[1], "model-*-of-*.safetensors")
PYTORCH_HUB_FILES = (WEIGHT_FILES[2], WEIGHT_FILES[3], "pytorch_model-*-of-*.bin")


@dataclass(frozen=True)
class ModelDir:
    """A model directory whose config, weights and tokenizer files have been checked."""

    path: Path
    config: dict[str, Any] = field(repr=False)

    @property
    def model_type(self) -> str:
        return self.config["model_type"]

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES[self.model_type]

    @property
    def uses_token_type_ids(self) -> bool:
        return self.architecture.token_type_ids

    @property
    def labels(self) -> list[str]:
        """Label names ordered by class id, from config.id2label."""
        id2label = self.config.get("id2label")
        if not id2label:
            return generic_names(int(self.config.get("num_labels", 2)))
        return [str(id2label[key]) for key in sorted(id2label, key=int)]

    def with_labels(self, names: Sequence[str]) -> ModelDir:
        """This model with its classes renamed (checkpoints that say LABEL_0, LABEL_1, ... name them nothing)."""
        if not all(isinstance(name, str) for name in names):
            raise InputError(f"the labels (--labels) must be names (strings), got {list(names)!r}")
        names = [name.strip() for name in names]
        if len(names) != len(self.labels):
            raise InputError(
                f"the labels (--labels) name {len(names)} classes ({', '.join(names)}); {self.path.name} has {len(self.labels)}"
            )
        if not distinct_names(names):
            raise InputError(f"the labels (--labels) must be distinct, non-empty names; got {', '.join(names)}")
        id2label = {str(i): name for i, name in enumerate(names)}
        label2id = {name: i for i, name in enumerate(names)}
        return replace(self, config={**self.config, "id2label": id2label, "label2id": label2id})

    @property
    def max_length(self) -> int:
        """Longest token sequence the model accepts, special tokens included: the position table's room, or
        tokenizer_config.json's model_max_length where that is less."""
        limit = self.architecture.max_tokens(self.config)
        tokenizer_limit = self.tokenizer_config.get("model_max_length")
        # Tokenizer configs often carry a huge sentinel (1e30) meaning "no limit of its own".
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < limit:
            limit = tokenizer_limit
        return limit

    @property
    def encoder_shape(self) -> dict[str, int]:
        """Layers, hidden size, attention heads and feed-forward size, from the architecture's config keys."""
        return self.architecture.encoder_shape(self.config)

    @property
    def weights_path(self) -> Path:
        """The weights file, or the index of a checkpoint in shards (`weight_files` lists the shards too)."""
        return self.weight_files[0]

    @cached_property
    def weight_files(self) -> list[Path]:
        """The weights file, or a shard index followed by every shard its weight_map names."""
        return _weight_files(self.path)

    @property
    def files(self) -> list[Path]:
        """The files the model is loaded from (config, weights, tokenizer and its settings), not checkpoints or logs."""
        names = ["config.json", *(file.name for file in self.weight_files), *TOKENIZER_FILES, *TOKENIZER_SETTINGS]
        return [self.path / name for name in names if (self.path / name).is_file()]

    @cached_property
    def tokenizer_config(self) -> dict[str, Any]:
        file = self.path / "tokenizer_config.json"
        if not file.is_file():
            return {}
        try:
            settings = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelError(f"{file}: malformed JSON ({error})") from None
        if not isinstance(settings, dict):
            raise ModelError(f"{file}: expected a JSON object")
        return settings

    @cached_property
    def content_hash(self) -> str:
        """sha256 over config, weights (every shard) and tokenizer files: the identity of the model's behaviour;
        remembered in the cache for files as they stand (`cache.remembered`)."""
        tokenizer = [*TOKENIZER_FILES, "tokenizer_config.json"]  # what the tokenizer is built from
        if not (self.path / TOKENIZER_FILES[0]).is_file():  # read beside vocab.txt alone: beside tokenizer.json, no
            tokenizer.append(ADDED_TOKENS_FILE)  # part of the model (its hash, and the exports and tunes keyed by it)
        names = ["config.json", *(file.name for file in self.weight_files), *tokenizer]
        files = [(name, self.path / name) for name in names if (self.path / name).is_file()]

        def compute() -> str:
            digest = hashlib.sha256()
            for name, file in files:
                digest.update(name.encode())
                with file.open("rb") as stream:
                    for block in iter(lambda: stream.read(1 << 20), b""):
                        digest.update(block)
            return digest.hexdigest()

        return remembered("content-hash|" + "|".join(file_stamp(file) for _, file in files), compute)


def load_model_dir(path: str | Path, *, require_head: bool = True) -> ModelDir:
    """Check that `path` is a usable model directory of a supported architecture and return it.

    `require_head=False` accepts a bare encoder (architectures `BertModel`), which is what
    `fastsentiment train` starts from.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"model directory not found: {path}")
    if not path.is_dir():
        raise ModelError(f"not a model directory (it is a file): {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path} has no config.json: not a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{config_file}: malformed JSON ({error})") from None
    except OSError as error:  # unreadable: a model directory that cannot be used, as any other (exit code 2)
        raise ModelError(f"{config_file}: {error.strerror or error}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_file}: expected a JSON object")

    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"{path}: unsupported architecture model_type={model_type!r}; "
            f"fastsentiment runs {', '.join(SUPPORTED_MODEL_TYPES)} models"
        )
    if problem := ARCHITECTURES[model_type].config_problem(config):
        raise ModelError(f"{config_file}: {problem}")
    weights = _weight_files(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"{path} has no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    head_outputs = _head_outputs(weights)

    architectures = config.get("architectures") or []
    if require_head and architectures and not any(name.endswith("ForSequenceClassification") for name in architectures):
        if all(name.endswith(PRETRAINED_ENCODERS) for name in architectures):
            raise ModelError(
                f"{path} is a bare encoder ({', '.join(architectures)}) without a classification head: "
                "fine-tune it first with `fastsentiment train --base-model ...`"
            )
        raise ModelError(
            f"{path} holds a {', '.join(architectures)}, not a sequence classifier (…ForSequenceClassification): "
            "fastsentiment classifies whole texts"
        )
    id2label = config.get("id2label")
    if id2label is not None:
        if not isinstance(id2label, dict) or not all(str(k).lstrip("-").isdigit() for k in id2label):
            raise ModelError(f"{config_file}: id2label must map class ids to label names")
        if sorted(int(k) for k in id2label) != list(range(len(id2label))):
            ids = ", ".join(sorted(id2label, key=int))
            raise ModelError(f"{config_file}: id2label must name classes 0 to {len(id2label) - 1}, one each; got {ids}")
        names = [str(name).strip() for name in id2label.values()]
        if not distinct_names(names):
            raise ModelError(f"{config_file}: id2label must give each class a name of its own; got {', '.join(names)}")
    model = ModelDir(path=path.resolve(), config=config)
    # config_problem has given the position table room for 3 tokens: a limit under that is model_max_length's, which
    # would otherwise be refused later as a --max-length the user never passed.
    if model.max_length < 3:
        raise ModelError(
            f"{path / 'tokenizer_config.json'}: model_max_length is {model.max_length}; "
            "a text takes at least 3 tokens ([CLS] text [SEP])"
        )
    if require_head and head_outputs is not None and head_outputs != len(model.labels):
        raise ModelError(
            f"{path}: the classifier has {head_outputs} outputs in the weights but config.json names "
            f"{len(model.labels)} classes (is num_labels / id2label right?)"
        )
    return model


def _weight_files(path: Path) -> list[Path]:
    """The weights file transformers would load, or a shard index followed by the shards it names."""
    name = next((name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if name is None:
        raise ModelError(f"{path} has no weights ({', '.join(WEIGHT_FILES[:-1])} or {WEIGHT_FILES[-1]})")
    if not name.endswith(SHARD_INDEX_SUFFIX):
        return [path / name]
    index = path / name
    shards = sorted(set(shard_map(index).values()))
    if missing := [shard for shard in shards if not (path / shard).is_file()]:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ModelError(f"{index}: the weights lack the shard {missing[0]}{more} that its weight_map names")
    return [index, *(path / shard for shard in shards)]


def shard_map(index: Path) -> dict[str, str]:
    """Tensor name -> the file of the shard that holds it, from a sharded checkpoint's index (its weight_map)."""
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{index}: malformed JSON ({error})") from None
    except OSError as error:
        raise ModelError(f"{index}: {error.strerror or error}") from None
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    # Shards are files beside the index: a name with a folder in it would read weights from elsewhere.
    if not (
        isinstance(weight_map, dict)
        and weight_map
        and all(
            isinstance(shard, str) and shard not in ("", ".", "..") and Path(shard).name == shard
            for shard in weight_map.values()
        )
    ):
        raise ModelError(f"{index}: expected a weight_map from tensor names to the shard files beside it")
    return weight_map


def _head_outputs(weights: list[Path]) -> int | None:
    """How many classes the weights' classification head gives, from whichever file (or shard) holds it."""
    tensors = [file for file in weights if not file.name.endswith(SHARD_INDEX_SUFFIX)]
    read = _safetensors_head_outputs if tensors[0].suffix == ".safetensors" else _pytorch_head_outputs
    found = [read(file) for file in tensors]  # every safetensors shard, so that a corrupt one is refused here too
    return next((outputs for outputs in found if outputs is not None), None)


# The classification head's output layer as transformers names it: RoBERTa-like and MPNet; BERT, DistilBERT, DeBERTa.
HEAD_OUTPUT_WEIGHTS = ("classifier.out_proj.weight", "classifier.weight")


def _safetensors_head_outputs(weights: Path) -> int | None:
    """How many classes the weights' classification head gives (None: no safetensors file, or no head named so).
    A truncated or corrupt safetensors file fails here, in one line, instead of inside whichever runtime reads it
    first; reading the header (and checking that the file is long enough for it) costs no more than a file open,
    and lets `backends --model` and every load refuse a head of another size than config.json's before any runtime."""
    if not weights.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with open(weights, "rb"):  # an unreadable file in the system's words (safetensors calls it missing)
            pass
        with safe_open(weights, "np") as tensors:
            names = set(tensors.keys())
            head = next((name for name in HEAD_OUTPUT_WEIGHTS if name in names), None)
            return None if head is None else tensors.get_slice(head).get_shape()[0]
    except (SafetensorError, OSError) as error:
        raise ModelError(f"{weights}: unreadable weights ({error})") from None


def _pytorch_head_outputs(weights: Path) -> int | None:
    """The same for a `pytorch_model.bin` (a zip archive whose pickle lists each tensor's shape), read without
    torch and without running anything the pickle names: only tensor shapes are rebuilt (None where the file is of
    another form, or holds no head named so; whatever is wrong with it is the runtime's to say at load)."""
    import zipfile

    try:
        with zipfile.ZipFile(weights) as archive:
            listing = next((name for name in archive.namelist() if name.endswith("/data.pkl")), None)
            if listing is None:
                return None
            with archive.open(listing) as pickled:
                tensors = _TensorShapes(pickled).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(tensors, dict):
        return None
    shape = next((tensors[name] for name in HEAD_OUTPUT_WEIGHTS if name in tensors), None)
    return shape[0] if isinstance(shape, tuple) and shape else None


class _TensorShapes(pickle.Unpickler):
    """Reads torch's tensor listing with every tensor turned into its shape; refuses anything else it names."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, *rest: tuple(size)
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *rest: data
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage"):  # named in each tensor's storage record
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a tensor listing")

    def persistent_load(self, record):  # the storage's bytes, which lie elsewhere in the archive: not read
        return None

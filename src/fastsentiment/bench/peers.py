"""Peer rows for `fastsentiment bench --peers PYTHON`: the same model on other people's fast paths.

Each peer is what a user would reach for instead of fastsentiment, set up the way its documentation
recommends: optimum-intel's `OVModelForSequenceClassification`, optimum's ONNX Runtime classifier
quantised to dynamic int8 with the CPU's `AutoQuantizationConfig`, and CTranslate2's int8 encoder
with the classification head applied in numpy. optimum pins an older transformers than fastsentiment,
so peers run in their own virtual environment (`scripts/build_peers_venv.sh`), one process per row,
through `python -m fastsentiment.bench.measure` like every other row. They receive the very batches
the fastsentiment rows receive (same tokenizer, same padding, same sentences) and the same thread
count, so the rows differ only in the runtime.

Exports and conversions are built once per model content into the cache and are not timed.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastsentiment.backends.base import cpu_flags, graph_feeds, inference_threads
from fastsentiment.bench.measure import PEER_PREFIX
from fastsentiment.cache import cache_root
from fastsentiment.errors import BackendError
from fastsentiment.models import ModelDir

# OpenVINO's element types as this tool names precisions ("bf16" is bf16: replacing its "f" wrote "bfp16").
OPENVINO_TYPE_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


@dataclass(frozen=True)
class PeerSpec:
    name: str
    description: str


class Peer:
    """A peer runtime holding one model; speaks the Backend protocol's `logits` so Classifier can drive it."""

    spec: PeerSpec
    device = "cpu"
    precision: str

    @classmethod
    def prepare(cls, model: ModelDir) -> Path:
        """The converted model in the cache, built first when missing (benchmarks call this before timing)."""
        return _built(cache_root() / "peers" / model.content_hash / cls.spec.name, lambda out: cls._build(model, out))

    @staticmethod
    def _build(model: ModelDir, out: Path) -> None:
        raise NotImplementedError

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _built(target: Path, build) -> Path:
    """`target`, built by `build(scratch_dir)` in a scratch directory and renamed into place when missing."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(scratch)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class OptimumOpenVINO(Peer):
    spec = PeerSpec("optimum-openvino", "optimum-intel OVModelForSequenceClassification (runtime's default precision)")

    def __init__(self, model: ModelDir, threads: int) -> None:
        from optimum.intel import OVModelForSequenceClassification

        self.model = OVModelForSequenceClassification.from_pretrained(
            self.prepare(model), ov_config={"INFERENCE_NUM_THREADS": threads}
        )
        self.inputs = set(self.model.input_names)
        hint = self.model.request.get_property("INFERENCE_PRECISION_HINT")  # an openvino Type: bf16, f32, f16
        name = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.precision = OPENVINO_TYPE_NAMES.get(name, name)

    @staticmethod
    def _build(model: ModelDir, out: Path) -> None:
        from optimum.intel import OVModelForSequenceClassification

        OVModelForSequenceClassification.from_pretrained(model.path, export=True, compile=False).save_pretrained(out)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        outputs = self.model(**graph_feeds(self.inputs, input_ids, attention_mask))
        return np.asarray(outputs.logits, dtype=np.float32)


class OptimumOrtInt8(Peer):
    spec = PeerSpec("optimum-ort-int8", "optimum ORTModelForSequenceClassification, ORTQuantizer dynamic int8")
    precision = "int8-dynamic"

    def __init__(self, model: ModelDir, threads: int) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForSequenceClassification

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.model = ORTModelForSequenceClassification.from_pretrained(
            self.prepare(model), file_name="model_quantized.onnx", session_options=options
        )
        self.inputs = {i.name for i in self.model.model.get_inputs()}

    @staticmethod
    def _build(model: ModelDir, out: Path) -> None:
        from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        exported = ORTModelForSequenceClassification.from_pretrained(model.path, export=True)
        flags = cpu_flags()
        # The configuration optimum's documentation picks per instruction set.
        if "avx512_vnni" in flags:
            config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
        elif "avx512f" in flags:
            config = AutoQuantizationConfig.avx512(is_static=False, per_channel=False)
        elif "avx2" in flags:
            config = AutoQuantizationConfig.avx2(is_static=False, per_channel=False)
        else:
            config = AutoQuantizationConfig.arm64(is_static=False, per_channel=False)
        ORTQuantizer.from_pretrained(exported).quantize(save_dir=out, quantization_config=config)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        outputs = self.model.model.run(["logits"], graph_feeds(self.inputs, input_ids, attention_mask))
        return np.asarray(outputs[0], dtype=np.float32)


class CTranslate2Int8(Peer):
    """CTranslate2 converts encoders, not classifiers: the encoder runs in CTranslate2 and the head in numpy.

    CTranslate2 pads each batch itself, so it receives the unpadded ids of every row.
    """

    spec = PeerSpec("ctranslate2-int8", "CTranslate2 int8 encoder, classification head in numpy")
    precision = "int8"
    heads = ("bert", "distilbert")

    def __init__(self, model: ModelDir, threads: int) -> None:
        import ctranslate2

        if model.model_type not in self.heads:
            raise BackendError(f"ctranslate2 peer: no head for {model.model_type!r} (runs {', '.join(self.heads)})")
        self.encoder = ctranslate2.Encoder(
            str(self.prepare(model)), device="cpu", compute_type="int8", intra_threads=threads
        )
        self.head = self._head(model)

    @staticmethod
    def _build(model: ModelDir, out: Path) -> None:
        from ctranslate2.converters import TransformersConverter
        from transformers import AutoModel

        with tempfile.TemporaryDirectory() as base:
            # The converter knows the bare encoders (BertModel, DistilBertModel), so it is handed one.
            AutoModel.from_pretrained(model.path).save_pretrained(base)
            for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
                if (model.path / name).is_file():
                    shutil.copy(model.path / name, base)
            TransformersConverter(base).convert(str(out), quantization="int8", force=True)

    @staticmethod
    def _head(model: ModelDir) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        weights: dict[str, np.ndarray] = {}
        for file in sorted(model.path.glob("*.safetensors")):
            weights.update(load_file(file))
        names = ["classifier.weight", "classifier.bias"]
        if model.model_type == "distilbert":
            names += ["pre_classifier.weight", "pre_classifier.bias"]
        return {name: weights[name].astype(np.float32) for name in names}

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        lengths = attention_mask.sum(1)
        output = self.encoder.forward_batch([ids[:n].tolist() for ids, n in zip(input_ids, lengths, strict=True)])
        head = self.head
        if "pre_classifier.weight" in head:  # DistilBERT: [CLS] state through a ReLU layer
            cls = np.asarray(output.last_hidden_state, dtype=np.float32)[:, 0]
            features = np.maximum(cls @ head["pre_classifier.weight"].T + head["pre_classifier.bias"], 0)
        else:  # BERT: the pooler's tanh([CLS] projection), which CTranslate2 computes
            features = np.asarray(output.pooler_output, dtype=np.float32)
        return features @ head["classifier.weight"].T + head["classifier.bias"]


PEERS: dict[str, type[Peer]] = {peer.spec.name: peer for peer in (OptimumOpenVINO, OptimumOrtInt8, CTranslate2Int8)}


def peer_configs() -> list[str]:
    return [PEER_PREFIX + name for name in PEERS]


def peer_class(config: str) -> type[Peer]:
    name = config.removeprefix(PEER_PREFIX)
    if name not in PEERS:
        raise BackendError(f"unknown peer {name!r}; peers: {', '.join(PEERS)}")
    return PEERS[name]


def prepare_peer(config: str, model: ModelDir) -> None:
    """Export or convert the model for a peer (cached per model content), outside any timing."""
    try:
        peer_class(config).prepare(model)
    except ImportError as error:
        raise BackendError(f"{config}: {error.name} is not installed here (scripts/build_peers_venv.sh)") from None


def load_peer(config: str, model: ModelDir, threads: int | None = None) -> Peer:
    try:
        return peer_class(config)(model, inference_threads(threads))
    except ImportError as error:
        raise BackendError(f"{config}: {error.name} is not installed here (scripts/build_peers_venv.sh)") from None

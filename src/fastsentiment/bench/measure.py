"""One benchmark configuration, measured inside its own process (`python -m fastsentiment.bench.measure`).

A fresh process per configuration keeps load time and peak memory clean: nothing another backend
imported or allocated is counted. Peak RSS is the kernel's high-water mark for this process (VmHWM), read once
the throughput model has run its batches and the labelled texts, before any second model loads for batch 1.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FIXED_LENGTH = 128
STRATEGIES = ("fixed", "dynamic", "sorted")
PIPELINE = "pipeline"
PEER_PREFIX = "peer:"


@dataclass
class Spec:
    config: str  # backend:precision, or pipeline / pipeline:BATCH
    model: str
    data: str
    text_column: str | None = None  # None: 'sentence', else 'text'
    label_column: str | None = None  # None: 'label' where there is one
    labels: list[str] | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    speed_limit: int | None = None
    labelled_limit: int | None = None
    latency_samples: int = 300
    device: str = "auto"


def peak_rss_mb() -> float:
    """This process's peak resident memory, from the kernel.

    VmHWM belongs to the current address space, so it starts afresh at exec; ru_maxrss does not (Linux
    carries it across execve), which would charge this process with its parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 * 1024)


def peak_cuda_mb() -> float | None:
    """The most GPU memory PyTorch's allocator held in this process, where it used CUDA, over every GPU (a row on
    cuda:1 uses that one alone); other runtimes' CUDA memory is not counted."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return sum(torch.cuda.max_memory_allocated(index) for index in range(torch.cuda.device_count())) / 2**20


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def measure(spec: Spec) -> dict:
    started = time.perf_counter()
    from fastsentiment.bench.data import load_bench_data

    data = load_bench_data(spec.data, spec.text_column, spec.label_column, spec.labels)
    speed_texts = data.speed.texts[: spec.speed_limit]
    labelled = data.labelled
    labelled_texts = labelled.texts[: spec.labelled_limit] if labelled else []
    if spec.config.split(":")[0] == PIPELINE:
        result = _measure_pipeline(spec, speed_texts, labelled_texts, started)
    else:
        result = _measure_backend(spec, speed_texts, labelled_texts, started)
    result.setdefault("peak_rss_mb", peak_rss_mb())  # a backend row reads it before a second model loads
    if (gpu_mb := peak_cuda_mb()) is not None:
        result["peak_gpu_mb"] = gpu_mb
    result["rss_source"] = "VmHWM" if Path("/proc/self/status").exists() else "ru_maxrss"
    result["speed_sentences"] = len(speed_texts)
    if labelled_texts:
        truth = np.asarray(labelled.labels[: len(labelled_texts)])
        result["accuracy"] = float((np.asarray(result["labelled_logits"]).argmax(1) == truth).mean())
    return result


def _load(spec: Spec):
    """The configuration's Classifier and its load time; a peer's cached conversion is built first, untimed."""
    from fastsentiment import Classifier

    backend, _, precision = spec.config.partition(":")
    if backend + ":" == PEER_PREFIX:
        from fastsentiment.bench.peers import load_peer, prepare_peer
        from fastsentiment.models import resolve_model
        from fastsentiment.tokenization import TextEncoder

        model = resolve_model(spec.model)
        prepare_peer(spec.config, model)
        t = time.perf_counter()
        peer = load_peer(spec.config, model)
        return Classifier(model, peer, TextEncoder.from_model_dir(model)), time.perf_counter() - t
    t = time.perf_counter()
    clf = Classifier.load(spec.model, backend=backend, device=spec.device, precision=precision or None)
    return clf, time.perf_counter() - t


def _measure_backend(spec: Spec, speed_texts, labelled_texts, started) -> dict:
    preparing = time.perf_counter()
    clf, load_s = _load(spec)
    # what came before the load (imports, the data); a peer's one-off conversion is neither
    import_and_data_s = preparing - started
    clf.logits(speed_texts[:32])  # warm-up
    t = time.perf_counter()
    sequences = clf.encoder.encode(speed_texts)
    tokenize_s = time.perf_counter() - t

    def run(batch):
        return clf.backend.logits(batch.input_ids, batch.attention_mask)

    throughput = {}
    for size in spec.batch_sizes:
        passes = {strategy: strategy_batches(sequences, size, strategy, clf.encoder) for strategy in STRATEGIES}
        # Every shape the passes meet, once, before any is timed: OpenVINO prepares kernels per new input shape, so
        # the first strategy to meet a shape paid for it (dynamic@1 measured 0.3-0.5x sorted@1, the same work).
        shapes = {batch.input_ids.shape: batch for batches in passes.values() for batch in batches}
        clf.run_batches(run, list(shapes.values()))
        for strategy, batches in passes.items():
            t = time.perf_counter()
            clf.run_batches(run, batches)  # as a file job runs them: several at once where the backend can
            throughput[f"{strategy}@{size}"] = len(sequences) / (time.perf_counter() - t)
    labelled_logits = clf.logits(labelled_texts).tolist() if labelled_texts else []
    # The memory column is the process holding the model that ran the batches: read before a second model (the
    # latency decision of `auto`, OpenVINO's one-call model) is loaded for the single texts below, which would
    # count two models in one row.
    peak_mb = peak_rss_mb()

    # Batches first: for `auto` the single texts may run on a second model (its latency decision), loaded only
    # now, so that the batched rate is measured in a process like a file job's, which holds one model.
    one_at_a_time = _latency_classifier(spec, clf)
    timed = speed_texts[: spec.latency_samples]
    if one_at_a_time is clf and 1 in spec.batch_sizes:
        one_at_a_time.logits(speed_texts[:8])  # warm-up; the batch-1 pass above met every shape
    else:  # a second model, or no batch-1 pass (--batch-sizes 8,32): every timed shape is met once first
        one_at_a_time.logits(timed, batch_size=1)  # (OpenVINO prepares kernels per new input shape)
    latencies = []
    for text in timed:  # the experiment's loop: one sentence at a time
        t = time.perf_counter()
        one_at_a_time.logits([text])
        latencies.append((time.perf_counter() - t) * 1000)
    return {
        "config": spec.config,
        "backend": clf.backend.spec.name,  # what "auto" resolved to, for an auto row
        "precision": clf.backend.precision,
        "latency_config": f"{one_at_a_time.backend.spec.name}:{one_at_a_time.backend.precision}",
        "device": clf.backend.device,
        "import_and_data_s": import_and_data_s,
        "load_s": load_s,
        "tokenize_s": tokenize_s,
        "latency_ms": latencies,
        "throughput": throughput,
        "labelled_logits": labelled_logits,
        "peak_rss_mb": peak_mb,
    }


def _latency_classifier(spec: Spec, clf):
    """What runs one text at a time, as `interactive` and single texts get it: for `auto`, its latency decision,
    which may differ from the throughput decision that runs the batches; for a backend that splits its threads
    into parallel calls for batches, the same backend loaded for latency (all threads on one call); for any other
    row, the same classifier."""
    from fastsentiment import Classifier

    if spec.config.startswith("peer:"):
        return clf
    if spec.config == "auto":
        from fastsentiment.backends.registry import auto_choice

        name, precision = auto_choice(clf.model, spec.device, None, "latency").path
        if (name, precision) != (clf.backend.spec.name, clf.backend.precision):
            return Classifier.load(
                spec.model, backend=name, device=spec.device, precision=precision, workload="latency"
            )
    return clf.one_call_at_a_time()


def strategy_batches(sequences, size: int, strategy: str, encoder):
    """The padded batches of `size` that `strategy` runs: "fixed" cuts and pads every text to FIXED_LENGTH tokens
    (a fixed-shape model's input); "dynamic" (input order) and "sorted" (length-sorted) run the texts as `classify`
    does, whole up to the model's max_length, each batch padded to its longest."""
    from fastsentiment.tokenization import truncated

    width = None
    if strategy == "fixed":
        width = min(FIXED_LENGTH, encoder.max_length)
        sequences = [truncated(s, width, encoder.closing_tokens) for s in sequences]
    if strategy == "sorted":
        order = np.argsort([len(s) for s in sequences], kind="stable")
    else:
        order = np.arange(len(sequences))
    return [
        encoder.pad([sequences[i] for i in order[start : start + size]], length=width)
        for start in range(0, len(order), size)
    ]


def _measure_pipeline(spec: Spec, speed_texts, labelled_texts, started) -> dict:
    """The reference most users run today: transformers.pipeline('text-classification')."""
    # Its load counts importing torch and transformers, as the torch rows' load does.
    loading = time.perf_counter()
    import_and_data_s = loading - started
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from fastsentiment.backends.torch_backend import best_device
    from fastsentiment.models import resolve_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    _, _, batch = spec.config.partition(":")
    batch_size = int(batch) if batch else None
    model = resolve_model(spec.model)
    device = best_device() if spec.device == "auto" else spec.device  # where the torch rows run
    # truncation=True: classify what the other rows classify (the pipeline would fail on long inputs).
    classify = pipeline(
        "text-classification", model=str(model.path), dtype=torch.float32, device=device, truncation=True
    )
    load_s = time.perf_counter() - loading
    classify(speed_texts[:8])
    latencies = []
    for text in speed_texts[: spec.latency_samples]:
        t = time.perf_counter()
        classify(text)
        latencies.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    classify(speed_texts, batch_size=batch_size) if batch_size else classify(speed_texts)
    rate = len(speed_texts) / (time.perf_counter() - t)
    logits = []
    if labelled_texts:
        outputs = classify(labelled_texts, top_k=None, function_to_apply="none", batch_size=batch_size or 1)
        index = {label: i for i, label in enumerate(model.labels)}
        for row in outputs:
            values = [0.0] * len(index)
            for item in row:
                values[index[item["label"]]] = item["score"]
            logits.append(values)
    return {
        "config": spec.config,
        "backend": PIPELINE,
        "precision": "fp32",
        "device": device,
        "import_and_data_s": import_and_data_s,
        "load_s": load_s,
        "tokenize_s": float("nan"),
        "latency_ms": latencies,
        "throughput": {f"pipeline@{batch_size or 1}": rate},
        "labelled_logits": logits,
    }


def main() -> None:
    from fastsentiment.errors import FastSentimentError

    spec = Spec(**json.loads(sys.argv[1]))
    try:
        result = measure(spec)
    except FastSentimentError as error:
        sys.stderr.write(f"{error}\n")
        raise SystemExit(2) from None
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()

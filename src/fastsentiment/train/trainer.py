"""Fine-tune a BERT-family encoder for sequence classification, resumably and reproducibly.

The loop is plain PyTorch on purpose: every choice that matters on a 2-core CPU (length-bucketed
batches, bf16 autocast, fused AdamW, checkpoint/resume, distillation from a teacher ensemble,
an exponential moving average of the weights) is visible here rather than buried in a framework.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fastsentiment.errors import FastSentimentError, InputError, ModelError
from fastsentiment.models import ModelDir, resolve_model
from fastsentiment.models.modeldir import TOKENIZER_FILES, TOKENIZER_SETTINGS
from fastsentiment.tokenization import TextEncoder
from fastsentiment.train.data import (
    read_labelled,
    split_held_out,
)

# Options that may differ between an interrupted run and its resumption without changing the result.
RESUME_NEUTRAL = {"resume", "device", "progress"}


@dataclass
class TrainConfig:
    base_model: str
    train_file: str
    output_dir: str
    eval_file: str | None = None
    eval_fraction: float = 0.02
    text_column: str = "sentence"
    label_column: str = "label"
    labels: list[str] | None = None
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 3e-5
    schedule: str = "linear"
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 42
    split_seed: int = 0
    device: str = "auto"
    precision: str = "bf16"
    eval_every: int | None = None
    checkpoint_every: int = 200
    teachers: list[str] = field(default_factory=list)
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    ema_decay: float | None = None
    select: str = "best"
    save_dtype: str = "float32"
    resume: bool = False
    progress: bool = True

    def fingerprint(self) -> str:
        relevant = {k: v for k, v in asdict(self).items() if k not in RESUME_NEUTRAL}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    output_dir: Path
    held_out_accuracy: float | None
    history: list[dict]
    seconds: float


def train(config: TrainConfig, on_event: Callable[[str], None] = print) -> TrainResult:
    """Run a fine-tune described by `config`; every input problem is raised before training starts."""
    _check_options(config)
    base = resolve_model(config.base_model, require_head=False)
    train_data, label_names = read_labelled(
        config.train_file, text_column=config.text_column, label_column=config.label_column, label_names=config.labels
    )
    if config.eval_file:
        held_out, _ = read_labelled(
            config.eval_file, text_column=config.text_column, label_column=config.label_column, label_names=label_names
        )
    else:
        train_data, held_out = split_held_out(train_data, config.eval_fraction, config.split_seed)
    teachers = [resolve_model(t) for t in config.teachers]
    for teacher in teachers:
        if teacher.labels != label_names:
            raise ModelError(f"teacher {teacher.path} has labels {teacher.labels}, the data has {label_names}")

    import torch

    from fastsentiment.train.loop import Trainer

    torch.set_num_threads(os.cpu_count() or 1)
    device = _pick_device(config.device)
    trainer = Trainer(config, base, label_names, device, on_event)
    started = time.perf_counter()
    encoder = TextEncoder.from_model_dir(base, max_length=config.max_length)
    train_ids = encoder.encode(train_data.texts)
    held_ids = encoder.encode(held_out.texts)
    teacher_logits = _teacher_logits(teachers, train_ids, encoder, config, device, on_event) if teachers else None
    history = trainer.fit(train_ids, train_data.labels, held_ids, held_out.labels, encoder, teacher_logits)
    output = trainer.save(base)
    best = max((h["held_out_accuracy"] for h in history), default=None)
    return TrainResult(output, best, history, time.perf_counter() - started)


def _check_options(config: TrainConfig) -> None:
    if config.epochs < 1 and not config.max_steps:
        raise InputError("--epochs must be at least 1")
    if config.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if config.learning_rate <= 0:
        raise InputError("--learning-rate must be positive")
    if config.schedule not in ("linear", "cosine", "constant"):
        raise InputError(f"unknown --schedule {config.schedule!r}; expected linear, cosine or constant")
    if config.precision not in ("bf16", "fp32"):
        raise InputError(f"unknown --precision {config.precision!r}; expected bf16 or fp32")
    if config.select not in ("best", "last"):
        raise InputError(f"unknown --select {config.select!r}; expected best or last")
    if config.save_dtype not in ("float32", "float16"):
        raise InputError(f"unknown --save-dtype {config.save_dtype!r}; expected float32 or float16")
    if config.ema_decay is not None and not 0 < config.ema_decay < 1:
        raise InputError("--ema must be between 0 and 1")
    if not 0 <= config.distill_alpha <= 1:
        raise InputError("--distill-alpha must be between 0 and 1")
    if config.resume and not (Path(config.output_dir) / "checkpoints" / "last.pt").is_file():
        raise InputError(f"--resume: no checkpoint in {config.output_dir}/checkpoints")


def _pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FastSentimentError("--device cuda requested but torch sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise FastSentimentError(f"training runs on cpu or cuda, not {name!r}")
    return torch.device(name)


def _teacher_logits(teachers: list[ModelDir], sequences, encoder, config, device, on_event) -> np.ndarray:
    """Mean logits of the teacher ensemble on the training texts, cached beside the output."""
    import torch
    from transformers import AutoModelForSequenceClassification

    key = hashlib.sha256()
    for teacher in teachers:
        key.update(teacher.content_hash.encode())
    key.update(json.dumps([len(s) for s in sequences]).encode())
    key.update(str(sum(sum(s) for s in sequences)).encode())
    cache = Path(config.output_dir) / f"teacher-logits-{key.hexdigest()[:16]}.npy"
    if cache.is_file():
        on_event(f"teacher logits: reusing {cache.name}")
        return np.load(cache)
    total = np.zeros((len(sequences), len(teachers[0].labels)), dtype=np.float64)
    for teacher in teachers:
        on_event(f"teacher logits: running {teacher.path}")
        model = AutoModelForSequenceClassification.from_pretrained(teacher.path, dtype=torch.float32).to(device).eval()
        total += predict_logits(model, sequences, encoder, teacher.uses_token_type_ids, device, config.precision)
        del model
    logits = (total / len(teachers)).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache.with_suffix(".tmp.npy"), logits)
    os.replace(cache.with_suffix(".tmp.npy"), cache)
    return logits


def predict_logits(
    model, sequences, encoder: TextEncoder, token_types: bool, device, precision: str, batch_size: int = 128
) -> np.ndarray:
    """Logits for token-id sequences in length-sorted batches (inference mode, no dropout)."""
    import torch

    order = np.argsort([len(s) for s in sequences], kind="stable")
    logits = np.zeros((len(sequences), model.config.num_labels), dtype=np.float32)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with torch.inference_mode(), autocast:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = encoder.pad([sequences[i] for i in rows])
            inputs = {
                "input_ids": torch.from_numpy(batch.input_ids).to(device),
                "attention_mask": torch.from_numpy(batch.attention_mask).to(device),
            }
            if token_types:
                inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
            logits[rows] = model(**inputs).logits.float().cpu().numpy()
    return logits


def copy_tokenizer_files(source: Path, target: Path) -> None:
    for name in (*TOKENIZER_FILES, *TOKENIZER_SETTINGS):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def total_steps(config: TrainConfig, examples: int) -> int:
    per_epoch = math.ceil(examples / config.batch_size)
    steps = per_epoch * config.epochs
    return min(steps, config.max_steps) if config.max_steps else steps

"""Fine-tune a BERT-family encoder for sequence classification, resumably and reproducibly.

The loop is plain PyTorch on purpose: every choice that matters on a 2-core CPU (length-bucketed
batches, bf16 autocast, fused AdamW, checkpoint/resume, distillation from a teacher ensemble,
an exponential moving average of the weights) is visible here rather than buried in a framework.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fastsentiment.cache import lock_file
from fastsentiment.errors import FastSentimentError, InputError, ModelError, missing_extra
from fastsentiment.labels import generic_names, matching_classes
from fastsentiment.models import ModelDir, resolve_model
from fastsentiment.outputs import check_output_place
from fastsentiment.tokenization import TextEncoder, Truncations
from fastsentiment.train.attention import AttentionMaps, teacher_attention
from fastsentiment.train.augment import Augmentation
from fastsentiment.train.config import TrainConfig
from fastsentiment.train.data import UNLABELLED, LabelledData, read_labelled, read_unlabelled, split_held_out

# The teacher's attention maps are held in memory for the run: refuse what would not fit on an ordinary machine.
ATTENTION_BYTES_LIMIT = 8 << 30
# Below this many held-out rows, checkpoints' accuracies differ by chance more than by training (one row of 100 is
# a point); --select best is warned about there.
FEW_HELD_OUT = 100
# The teacher-logits cache a distillation run writes into --out before its first checkpoint (_teacher_outputs), and
# its scratch file: not earlier work, since a rerun reuses it (same teachers, same texts) or writes another beside it.
TEACHER_CACHE = "teacher-logits-*.npz"


@dataclass
class TrainResult:
    output_dir: Path
    held_out_accuracy: float | None  # of the weights saved (--select best or last), None where none were evaluated
    history: list[dict]
    seconds: float
    saved_step: int | None = None  # the optimiser step of the weights saved


def train(config: TrainConfig, on_event: Callable[[str], None] = print) -> TrainResult:
    """Run a fine-tune described by `config`; every input problem is raised before training starts."""
    _check_options(config)
    with _holding(Path(config.output_dir)):
        return _train(config, on_event)


@contextlib.contextmanager
def _holding(out: Path) -> Iterator[None]:
    """The output folder, locked for this run: two runs on one --out (a --resume started while the first still ran)
    both trained and wrote the same checkpoint and model files, each renaming the other's. The lock is the folder's
    own (flock on it), so nothing is left in it; a folder this run made and left empty is removed."""
    check_output_place(out, folder=True)  # a place nothing can be written in, before the models load
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    folder = os.open(out, os.O_RDONLY)
    try:
        if not lock_file(folder, wait=False):
            raise InputError(
                f"--out {out}: another training run is writing there; wait for it, or choose another folder"
            )
        yield
    except BaseException:
        if made:
            with contextlib.suppress(OSError):  # not empty: the run's own work, kept for --resume
                out.rmdir()
        raise
    finally:
        os.close(folder)


def _train(config: TrainConfig, on_event: Callable[[str], None]) -> TrainResult:
    for runtime in ("torch", "transformers"):
        if importlib.util.find_spec(runtime) is None:
            raise missing_extra(runtime, "train", "fastsentiment train")
    base = resolve_model(config.base_model, require_head=False)
    train_data, label_names = read_labelled(
        config.train_file, text_column=config.text_column, label_column=config.label_column, label_names=config.labels
    )
    teachers = [resolve_model(t) for t in config.teachers]
    models = [("base model", base), *(("teacher", t) for t in teachers)]
    resumes = _check_output(Path(config.output_dir), models, config.resume)
    if config.resume and not resumes:
        on_event(f"--resume: no checkpoint in {config.output_dir} yet: starting at step 0")
        config = replace(config, resume=False)
    if config.labels is None:
        named = _names_for_class_ids(label_names, [base, *teachers], on_event)
        order = matching_classes(label_names, named)
        if named != label_names and order is not None:  # the head's names and order: the data's ids follow them
            train_data = LabelledData(train_data.texts, np.array(order)[train_data.labels], train_data.lines)
        label_names = named
    _check_classes(train_data, label_names, config.train_file, on_event)
    if config.eval_file:
        held_out, _ = read_labelled(
            config.eval_file, text_column=config.text_column, label_column=config.label_column, label_names=label_names
        )
    else:
        train_data, held_out = split_held_out(train_data, config.eval_fraction, config.split_seed)
        if len(np.unique(train_data.labels)) < 2:  # the held-out rows took every row of a class
            raise InputError(
                f"{config.train_file}: after holding out {len(held_out)} row(s) for evaluation, the rows left to "
                "train on are all of one class; give more rows, or an --eval-file"
            )
    for teacher in teachers:  # a teacher whose classes have no names (LABEL_0...) fits any names of its count
        same_order = matching_classes(teacher.labels, label_names) == list(range(len(label_names)))
        if not same_order and teacher.labels != generic_names(len(label_names)):
            raise ModelError(f"teacher {teacher.path} has labels {teacher.labels}, the student's are {label_names}")
    if teachers and config.teacher_logits:
        raise InputError("--teacher-logits replaces --teacher: give one of them")
    if config.augment and not (teachers or config.teacher_logits):
        raise InputError("--augment needs a teacher (--teacher or --teacher-logits): the copies have no labels")
    if config.unlabelled and not (teachers or config.teacher_logits):
        raise InputError("--unlabelled needs a teacher (--teacher or --teacher-logits): its texts have no labels")
    unlabelled = read_unlabelled(config.unlabelled, config.text_column, on_event)
    texts, labels = distillation_data(train_data, held_out, config.augment, config.split_seed, unlabelled)
    several = len(teachers) > 1 or len(config.teacher_logits) > 1  # an ensemble: its logits are averaged
    if config.feature_weight and several:
        raise InputError("--feature-weight needs one teacher: the states of several teachers do not average")
    if config.attention_weight and several:
        raise InputError("--attention-weight needs one teacher: the attention of several teachers does not average")
    saved_logits = (
        np.mean([load_teacher_logits(Path(p), texts, label_names, on_event) for p in config.teacher_logits], axis=0)
        if config.teacher_logits
        else None
    )
    if config.feature_weight and not (teachers or config.teacher_logits):
        raise InputError("--feature-weight needs a teacher (--teacher or --teacher-logits)")
    saved_features = (
        load_teacher_features(Path(config.teacher_logits[0]), texts)
        if config.feature_weight and config.teacher_logits
        else None
    )
    if config.attention_weight and not (teachers or config.teacher_logits):
        raise InputError("--attention-weight needs a teacher (--teacher or --teacher-logits)")
    if config.attention_weight and teachers:
        _check_heads(attention_heads(teachers[0].config), attention_heads(base.config))
    saved_attention = (
        load_teacher_attention(Path(config.teacher_logits[0]), texts)
        if config.attention_weight and config.teacher_logits
        else None
    )
    if saved_attention is not None:
        _check_heads(saved_attention.heads, attention_heads(base.config))

    import torch

    from fastsentiment.backends.base import usable_cpus
    from fastsentiment.train.loop import Trainer

    torch.set_num_threads(usable_cpus())
    device = _training_device(config.device)
    config = replace(config, precision=training_precision(config.precision, device))
    trainer = Trainer(config, base, label_names, device, on_event, teachers)  # a checkpoint is checked here
    on_event(f"training on {device} in {config.precision}")
    if config.select == "best" and len(held_out) < FEW_HELD_OUT:  # said once every option has passed its checks
        on_event(
            f"warning: --select best chooses among checkpoints by their accuracy on {len(held_out)} held-out row(s), "
            f"where one row is {100 / len(held_out):.3g} points; hold out more rows (--eval-fraction, --eval-file) "
            "or keep the last weights (--select last)"
        )
    if config.augment or config.unlabelled:
        on_event(f"distilling on {len(texts) - len(train_data):,} unlabelled texts besides {len(train_data):,} rows")
    started = time.perf_counter()
    encoder = TextEncoder.from_model_dir(base, max_length=config.max_length)
    cuts = Truncations()
    rows = _line_names(config.train_file, train_data)
    extra = [f"unlabelled text {number}" for number in range(1, len(texts) - len(train_data) + 1)]
    names = [*rows, *extra]
    train_ids = _encode_named(encoder, texts, names, cuts)
    held_names = _line_names(config.eval_file or config.train_file, held_out)
    held_ids = _encode_named(encoder, held_out.texts, held_names, cuts)
    if cuts.count > cuts.named:  # the first few were named; the count tells how much --max-length cuts
        on_event(
            f"warning: {cuts.count:,} of {len(texts) + len(held_out):,} texts were truncated to --max-length "
            f"{encoder.max_length} (the longest has {cuts.longest} tokens)"
        )
    teacher_logits, features, attention = saved_logits, saved_features, saved_attention
    if teachers:
        teacher_logits, features, attention = _teacher_outputs(
            teachers, texts, train_ids, label_names, config, device, on_event, names
        )
    if attention is not None:
        attention = _attention_for_student(attention, train_ids, on_event)
    history = trainer.fit(train_ids, labels, held_ids, held_out.labels, encoder, teacher_logits, features, attention)
    output = trainer.save(base)
    step, accuracy = trainer.saved
    return TrainResult(output, accuracy, history, time.perf_counter() - started, step)


def _line_names(path: str, data: LabelledData) -> list[str]:
    """What a warning calls each row: its file and line (by its place in the list where the lines are unknown)."""
    if data.lines is None:
        return [f"{path}, row {number}" for number in range(1, len(data) + 1)]
    return [f"{path}, line {line}" for line in data.lines]


def _encode_named(encoder: TextEncoder, texts: Sequence[str], names: Sequence[str], cuts: Truncations) -> list:
    """`encoder.encode`, naming each text cut to --max-length as `names` do (file and line): encode's "input 19" is
    the 19th text after the held-out split and the copies, which points at no line of any file."""
    encodings = encoder.encodings(texts)
    return [encoder.fit(encoding.ids, name, cuts) for encoding, name in zip(encodings, names, strict=True)]


def distillation_data(
    train_data: LabelledData, held_out: LabelledData, augment: int, seed: int, unlabelled: Sequence[str] = ()
) -> tuple[list[str], np.ndarray]:
    """The texts the student trains on and their labels: the training rows, then `augment` perturbed copies of each
    long one (none equal to a held-out text), then the `unlabelled` texts that equal no text before them and no
    held-out text (a held-out text the teacher labels for the student would measure memory, not generalisation).
    Copies and unlabelled texts are labelled UNLABELLED: only the teacher's logits teach on them. A teacher-logits
    file covers exactly these texts, in this order."""
    extra = Augmentation(copies=augment, seed=seed).texts(train_data.texts, avoid=held_out.texts) if augment else []
    seen = {" ".join(text.split()) for text in [*train_data.texts, *extra, *held_out.texts]}
    for text in unlabelled:
        key = " ".join(text.split())
        if key not in seen:
            seen.add(key)
            extra.append(text)
    labels = np.concatenate([train_data.labels, np.full(len(extra), UNLABELLED, dtype=np.int64)])
    return train_data.texts + extra, labels


def _names_for_class_ids(names: list[str], models: list[ModelDir], on_event: Callable[[str], None]) -> list[str]:
    """Class ids in the data (0, 1) take the names of the first model, base or teacher, whose head names as many
    classes: fine-tuning a sentiment model further on SST-2's 0/1 keeps its NEGATIVE/POSITIVE, as transformers keeps
    a checkpoint's id2label. Named labels in the data keep their names, in the order of a head that names the same
    classes (a head's rows are kept by position: positive, negative, neutral must stay in that order, not be
    sorted). --labels is kept as given."""
    if names != generic_names(len(names)):
        for model in models:  # in any case, as a label cell matches a class: "negative" is a head's NEGATIVE
            if matching_classes(names, model.labels) is not None and model.labels != names:
                on_event(f"classes named and ordered as {model.path.name}'s head: {', '.join(model.labels)}")
                return list(model.labels)
        return names
    for model in models:
        if len(model.labels) == len(names) and model.labels != generic_names(len(names)):
            on_event(
                f"class ids named after {model.path.name}: {', '.join(model.labels)} (--labels names them otherwise)"
            )
            return model.labels
    return names


def _check_output(out: Path, models: list[tuple[str, ModelDir]], resume: bool) -> bool:
    """The output folder is written over: never a model this run reads, and never earlier work unless resumed.
    Returns whether the run resumes from a checkpoint: False for --resume where a run stopped before its first
    checkpoint was whole, leaving only the teacher-logits cache or a partial checkpoints folder (neither is earlier
    work: the run starts anew)."""
    for role, model in models:
        if out.resolve() == model.path.resolve():
            raise InputError(f"--out {out} is the {role}'s own folder, which training would overwrite; choose another")
    held = list(out.iterdir()) if out.is_dir() else []
    last = out / "checkpoints" / "last.pt"
    # A checkpoints folder without last.pt is a run killed while it wrote its first checkpoint (best.pt, or
    # last.pt.tmp): nothing to resume from, and no earlier work either (the rerun writes both anew). Counted as work,
    # it left a folder that neither --resume nor a fresh run would take.
    earlier = [
        path
        for path in held
        if not path.match(TEACHER_CACHE) and not (path.name == "checkpoints" and path.is_dir() and not last.is_file())
    ]
    if not resume and earlier:
        raise InputError(
            f"--out {out} already holds files (an earlier model?); choose a new or empty folder, or --resume the "
            "run that stopped there"
        )
    if resume and not last.is_file():
        if held and not earlier:
            return False
        raise InputError(f"--resume: no checkpoint in {out / 'checkpoints'}; without --resume, train into a new --out")
    return resume


def _check_classes(data: LabelledData, names: list[str], path: str, on_event: Callable[[str], None]) -> None:
    """A classifier learns to tell classes apart: refuse data of one class; say which named classes have no row."""
    present = set(np.unique(data.labels).tolist())
    if len(present) < 2:
        raise InputError(
            f"{path}: every row has the label {names[data.labels[0]]}; a classifier needs two classes or more"
        )
    if missing := [name for index, name in enumerate(names) if index not in present]:
        listed = ", ".join(missing[:10]) + (f" and {len(missing) - 10:,} more" if len(missing) > 10 else "")
        on_event(f"warning: no training row has the label {listed}; the model will hardly ever predict it")


MAX_TEMPERATURE = 1000


def _check_options(config: TrainConfig) -> None:
    if config.max_steps is not None and config.max_steps < 1:
        raise InputError("--max-steps must be at least 1 (leave it out to train for --epochs)")
    if config.epochs < 1 and not config.max_steps:
        raise InputError("--epochs must be at least 1")
    if Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        raise InputError(f"--out {config.output_dir} is a file; training writes a folder")
    if config.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if config.checkpoint_every < 1:
        raise InputError("--checkpoint-every must be at least 1")
    if config.eval_every is not None and config.eval_every < 1:
        raise InputError("--eval-every must be at least 1 (leave it out to evaluate at the end of each epoch only)")
    # Comparisons are written so that NaN fails them: a NaN rate or weight would turn every weight into NaN.
    if not (config.learning_rate > 0 and math.isfinite(config.learning_rate)):
        raise InputError(f"--learning-rate (--lr) must be a positive number, got {config.learning_rate}")
    if not 0 <= config.warmup_ratio <= 1:
        raise InputError(f"--warmup-ratio must be between 0 and 1 (a share of the steps), got {config.warmup_ratio}")
    if not (config.weight_decay >= 0 and math.isfinite(config.weight_decay)):
        raise InputError(f"--weight-decay must be 0 or more, got {config.weight_decay}")
    if config.schedule not in ("linear", "cosine", "constant"):
        raise InputError(f"unknown --schedule {config.schedule!r}; expected linear, cosine or constant")
    if config.precision not in ("auto", "bf16", "fp32"):
        raise InputError(f"unknown --precision {config.precision!r}; expected auto, bf16 or fp32")
    if config.select not in ("best", "last"):
        raise InputError(f"unknown --select {config.select!r}; expected best or last")
    if config.save_dtype not in ("float32", "float16"):
        raise InputError(f"unknown --save-dtype {config.save_dtype!r}; expected float32 or float16")
    if config.augment < 0:
        raise InputError("--augment must be 0 or more")
    if not (config.feature_weight >= 0 and math.isfinite(config.feature_weight)):
        raise InputError(f"--feature-weight must be 0 or more, got {config.feature_weight}")
    if not (config.attention_weight >= 0 and math.isfinite(config.attention_weight)):
        raise InputError(f"--attention-weight must be 0 or more, got {config.attention_weight}")
    if config.ema_decay is not None and not 0 < config.ema_decay < 1:
        raise InputError("--ema must be between 0 and 1")
    if not 0 <= config.distill_alpha <= 1:
        raise InputError("--distill-alpha must be between 0 and 1")
    # The teacher's and student's logits are divided by it: 0 gives NaN weights, infinity a loss of 0 throughout.
    # Above the bound the softened distributions are uniform for any use, and near fp32's limit the loss's T^2 factor
    # overflowed into a NaN loss that blamed the learning rate.
    if not (0 < config.distill_temperature <= MAX_TEMPERATURE):
        raise InputError(
            f"--distill-temperature must be above 0 and at most {MAX_TEMPERATURE:,}, got {config.distill_temperature}"
        )


def _training_device(name: str):
    """The torch device to train on, chosen and checked as the torch backend chooses and checks its device."""
    import torch

    from fastsentiment.backends.torch_backend import TorchBackend, best_device

    device = best_device() if name == "auto" else name
    try:
        torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown --device {name!r}; expected auto, cpu, cuda or mps") from None
    if problem := TorchBackend.device_problem(device):
        raise FastSentimentError(f"--device {name}: {problem}")
    return torch.device(device)


def training_precision(requested: str, device) -> str:
    """`auto` is bf16 autocast where the device has bf16 arithmetic (CUDA, a CPU with AVX-512 bf16 or AMX) and
    fp32 elsewhere, where bf16 would be emulated and many times slower."""
    if requested != "auto":
        return requested
    from fastsentiment.backends.base import cpu_computes_bf16

    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_computes_bf16() else "fp32"


def _fp32_inference_runtime(teacher: ModelDir, device) -> str | None:
    """On a CPU, an inference runtime that computes the teacher's fp32 logits (equal to Hugging Face's to 1e-4)
    faster than PyTorch eager: OpenVINO ran a fine-tuned MPNet-base at 1.34x, ONNX Runtime at 1.32x. None: torch."""
    if device.type != "cpu":
        return None
    from fastsentiment.backends.registry import availability

    for name in ("openvino", "onnx"):
        if availability(name, "cpu", teacher).runnable:
            return name
    return None


def _teacher_outputs(
    teachers: list[ModelDir],
    texts: list[str],
    train_ids: list,
    labels: list[str],
    config,
    device,
    on_event,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, AttentionMaps | None]:
    """What the teachers give the student: mean logits (columns in the order of `labels`, the run's classes, as
    train() checked the teachers' heads), and with --feature-weight / --attention-weight the (one) teacher's states /
    attention maps. Cached beside the output in the file format `--teacher-logits` reads, so that a resumed or
    restarted run computes none of them again and a later run can learn from the file."""
    # The logits are fp32 through an inference runtime where one runs them, else torch in the run's own precision
    # (bf16 autocast where the device computes it); states and maps come from torch in that precision. Both are
    # part of the cache key, since they change the numbers.
    runtimes = [_fp32_inference_runtime(teacher, device) for teacher in teachers]
    key = hashlib.sha256(f"torch {config.precision}".encode())
    for teacher, runtime in zip(teachers, runtimes, strict=True):
        key.update(f"{teacher.content_hash} {runtime or 'torch ' + config.precision}".encode())
    key.update(str(config.max_length).encode())
    key.update(texts_digest(texts).encode())
    cache = Path(config.output_dir) / f"teacher-logits-{key.hexdigest()[:16]}.npz"
    logits = features = attention = None
    if cache.is_file():
        on_event(f"teacher logits: reusing {cache.name}")
        with np.load(cache) as saved:
            logits = saved["logits"]
            features = saved["features"] if "features" in saved.files else None
            attention = _saved_attention(saved)
    computed = logits is None
    if logits is None:
        logits = _teacher_logits(teachers, runtimes, texts, config, device, on_event, names)
    if config.feature_weight and features is None:
        on_event(f"teacher states: running {teachers[0].path} on torch {config.precision}")
        # fp16, as the cache and --teacher-logits give them: a resumed run learns from the same numbers
        features = teacher_states(teachers[0], texts, config.max_length, device, config.precision).astype(np.float16)
        computed = True
    if config.attention_weight and attention is None:
        heads = attention_heads(teachers[0].config)
        size = heads * sum(len(ids) ** 2 for ids in train_ids) * 2  # fp16 bytes: the maps grow with length squared
        if size > ATTENTION_BYTES_LIMIT:
            raise InputError(
                f"--attention-weight: the teacher's attention maps of these texts would take {size / 1e9:.1f} GB; "
                "use a shorter --max-length"
            )
        on_event(f"teacher attention: running {teachers[0].path} on torch {config.precision} ({size / 1e9:.2f} GB)")
        attention = teacher_attention(teachers[0], texts, config.max_length, device, config.precision)
        computed = True
    if computed:
        save_teacher_logits(cache, logits, texts, features, attention, labels)
    return logits, features if config.feature_weight else None, attention if config.attention_weight else None


def _teacher_logits(
    teachers: list[ModelDir], runtimes: list, texts: list[str], config, device, on_event, names=None
) -> np.ndarray:
    """Mean logits of the teacher ensemble on the training texts, each teacher on its runtime (None: torch); a text
    the teacher's tokenizer cuts is named as `names` name it (file and line).

    Each teacher reads the texts through its own tokenizer: a base-size teacher (MPNet, RoBERTa)
    does not share the student's vocabulary.
    """
    import torch

    from fastsentiment.models.network import load_network
    from fastsentiment.train.loop import predict_logits

    total = np.zeros((len(texts), len(teachers[0].labels)), dtype=np.float64)
    max_length = config.max_length
    for teacher, runtime in zip(teachers, runtimes, strict=True):
        on_event(
            f"teacher logits: running {teacher.path} on {f'{runtime} fp32' if runtime else 'torch ' + config.precision}"
        )
        if runtime:
            from fastsentiment.classifier import Classifier

            clf = Classifier.load(
                teacher.path,
                backend=runtime,
                precision="fp32",
                max_length=min(max_length, teacher.max_length),
                batch_size=64,
            )
            total += clf.logits(texts, names=names)
            del clf
            continue
        encoder = TextEncoder.from_model_dir(teacher, max_length=min(max_length, teacher.max_length))
        model = load_network(teacher, dtype=torch.float32).to(device).eval()
        sequences = encoder.encode(texts) if names is None else _encode_named(encoder, texts, names, Truncations())
        total += predict_logits(model, sequences, encoder, teacher.uses_token_type_ids, device, config.precision)
        del model
    return (total / len(teachers)).astype(np.float32)


def teacher_states(teacher: ModelDir, texts: list[str], max_length: int, device, precision: str) -> np.ndarray:
    """The teacher's last-layer first-token state for every text (what `--feature-weight` pulls the student to)."""
    import torch

    from fastsentiment.models.network import load_network
    from fastsentiment.train.loop import predict_first_token_states

    encoder = TextEncoder.from_model_dir(teacher, max_length=min(max_length, teacher.max_length))
    model = load_network(teacher, dtype=torch.float32).to(device).eval()
    return predict_first_token_states(
        model, encoder.encode(texts), encoder, teacher.uses_token_type_ids, device, precision
    )


def save_teacher_logits(
    path: Path,
    logits: np.ndarray,
    texts: list[str],
    features: np.ndarray | None = None,
    attention: AttentionMaps | None = None,
    labels: Sequence[str] | None = None,
) -> None:
    """Write logits (and the teacher's states, for `--feature-weight`, and attention, for `--attention-weight`) as
    `--teacher-logits` reads them, atomically. The texts' digest travels with them, so that a later run can check
    they belong to its own training texts, and the class name of each column (`labels`), so that it can check they
    are its classes in its order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.stem + ".tmp.npz")
    arrays = {"logits": logits.astype(np.float32), "texts_sha256": np.array(texts_digest(texts))}
    if labels is not None:
        arrays["labels"] = np.array(list(labels), dtype=str)
    if features is not None:
        arrays["features"] = features.astype(np.float16)
    if attention is not None:
        arrays |= {
            "attention_heads": np.array(attention.heads),
            "attention_lengths": attention.lengths,
            "attention": attention.values,
        }
    np.savez(scratch, **arrays)
    os.replace(scratch, path)


def texts_digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def load_teacher_features(path: Path, texts: list[str]) -> np.ndarray:
    """The teacher's states saved beside its logits (`scripts/save_teacher_logits.py --features`); the file's texts
    have been checked by load_teacher_logits."""
    with np.load(path) as saved:
        if "features" not in saved.files:
            raise InputError(
                f"--feature-weight: {path} holds the teacher's logits only; "
                "save its states too (scripts/save_teacher_logits.py --features)"
            )
        features = saved["features"]
    if len(features) != len(texts):
        raise InputError(f"--feature-weight: {path} holds states of {len(features)} texts, this run has {len(texts)}")
    return features


def load_teacher_attention(path: Path, texts: list[str]) -> AttentionMaps:
    """The teacher's attention saved beside its logits (`scripts/save_teacher_logits.py --attention`); the file's
    texts have been checked by load_teacher_logits."""
    with np.load(path) as saved:
        if "attention" not in saved.files:
            raise InputError(
                f"--attention-weight: {path} holds no attention of the teacher; "
                "save it too (scripts/save_teacher_logits.py --attention)"
            )
        maps = _saved_attention(saved)
    if len(maps.lengths) != len(texts):
        raise InputError(
            f"--attention-weight: {path} holds attention of {len(maps.lengths)} texts, this run has {len(texts)}"
        )
    return maps


def _saved_attention(saved) -> AttentionMaps | None:
    """The attention maps in an open teacher-logits file (as save_teacher_logits writes them), if it holds any."""
    if "attention" not in saved.files:
        return None
    return AttentionMaps(int(saved["attention_heads"]), saved["attention_lengths"], saved["attention"])


def _attention_for_student(attention: AttentionMaps, train_ids: list, on_event: Callable[[str], None]) -> AttentionMaps:
    """The teacher's maps of the texts the student tokenises to as many tokens (the rest learn from logits only);
    the heads were checked before the maps were loaded or computed."""
    aligned = attention.aligned_with([len(ids) for ids in train_ids])
    kept = int((aligned.used > 0).sum())
    if not kept:
        raise InputError(
            "--attention-weight: no training text has as many tokens for the teacher as for the student "
            "(their tokenizers differ); attention maps are compared token by token"
        )
    on_event(f"attention distillation on {kept:,} of {len(train_ids):,} texts (the rest tokenise differently)")
    return aligned


def attention_heads(config: dict) -> int | None:
    """Attention heads per layer from a model's config.json (BERT-style and DistilBERT names)."""
    return config.get("num_attention_heads", config.get("n_heads"))


def _check_heads(teacher: int | None, student: int | None) -> None:
    if teacher != student:
        raise InputError(
            f"--attention-weight: the teacher has {teacher} attention heads, the student {student}; "
            "attention distributions are compared head by head"
        )


def load_teacher_logits(
    path: Path,
    texts: list[str],
    labels: Sequence[str],
    on_event: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Logits an earlier run's teachers gave these training texts (its `teacher-logits-*.npz`): distillation
    without the teachers, e.g. on a machine where they are too large to run.

    `labels`: the run's class names, in its order. A file that names its classes must name
    these, in this order (the columns of one in another order would teach inverted targets), or LABEL_0,
    LABEL_1... (a teacher without names fits any names of its count, as in train()); a file without names (written
    before they were saved, or by scripts that do not save them) is taken by position, with a warning to
    `on_event`."""
    if not path.is_file():
        raise InputError(f"--teacher-logits: no file {path}")
    try:
        with np.load(path) as saved:
            logits, digest = saved["logits"], str(saved["texts_sha256"])
            names = [str(name) for name in saved["labels"]] if "labels" in saved.files else None
    except (OSError, ValueError, KeyError):
        raise InputError(
            f"--teacher-logits: {path} is not a teacher-logits file written by fastsentiment train"
        ) from None
    count = len(labels)
    if digest != texts_digest(texts) or logits.shape != (len(texts), count):
        raise InputError(
            f"--teacher-logits: {path} holds logits of other training texts "
            "(another file, --eval-fraction, --split-seed or labels than this run)"
        )
    if names is None:
        if on_event is not None:
            on_event(
                f"warning: --teacher-logits {path} does not name its classes; its columns are taken as "
                f"{', '.join(labels)}"
            )
    elif names not in (list(labels), generic_names(count)):
        raise InputError(
            f"--teacher-logits: {path} holds logits of the classes {', '.join(names)}; this run's are "
            f"{', '.join(labels)} (give --labels in the file's order)"
        )
    return logits.astype(np.float32)

"""The training loop proper: optimisation, evaluation, checkpoints and resume."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig

from fastsentiment.backends.base import usable_cpus
from fastsentiment.backends.torch_backend import attention_kernels, torch_inputs
from fastsentiment.classifier import length_sorted_batches
from fastsentiment.errors import InputError
from fastsentiment.labels import generic_names, matching_classes
from fastsentiment.models import ModelDir
from fastsentiment.models.modeldir import HEAD_OUTPUT_WEIGHTS, TOKENIZER_FILES, TOKENIZER_SETTINGS
from fastsentiment.models.network import load_network, transformers_quiet
from fastsentiment.outputs import as_umask_allows
from fastsentiment.tokenization import TextEncoder
from fastsentiment.train.attention import AttentionMaps, attention_loss
from fastsentiment.train.config import DATA_FILE_OPTIONS, RESUME_NEUTRAL, TrainConfig, model_identity, total_steps
from fastsentiment.train.data import UNLABELLED, length_bucketed_batches

# Attention dropout as BERT-style and DistilBERT configs name it.
ATTENTION_DROPOUT = ("attention_probs_dropout_prob", "attention_dropout")


@dataclass
class SmoothedLoss:
    """The training loss as the progress bar and the history report it: an exponential moving average, started at
    zero and divided by 1 - decay^count as Adam corrects its moments, so that the first steps are averaged rather
    than the first one standing for all (or the zero start pulling them down). Kept in checkpoints: a resumed run
    reports what the uninterrupted one would."""

    decay: float = 0.98
    total: float = 0.0
    count: int = 0

    def add(self, loss: float) -> None:
        self.total = self.decay * self.total + (1 - self.decay) * loss
        self.count += 1

    @property
    def value(self) -> float:
        return self.total / (1 - self.decay**self.count) if self.count else float("nan")


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        base: ModelDir,
        labels: list[str],
        device: torch.device,
        on_event: Callable[[str], None],
        teachers: Sequence[ModelDir] = (),
    ) -> None:
        self.config = config
        # Once: a checkpoint stores them, a resumed run compares them.
        self.data_identity = config.data_identity()
        self.model_identity = model_identity([base, *teachers])
        self.labels = labels
        self.device = device
        self.on_event = on_event
        self.output = Path(config.output_dir)
        self.checkpoints = self.output / "checkpoints"
        # Read and checked before anything runs: a checkpoint of other options, data or models is refused in one
        # line before the teachers run or its weights meet a network of another shape.
        self.resumed_state = self._checked_checkpoint() if config.resume else None
        self.token_types = base.uses_token_type_ids
        torch.manual_seed(config.seed)  # the classification head's initial weights
        # The base's config with its class's defaults for what config.json leaves out.
        base_config = AutoConfig.from_pretrained(base.path) if config.attention_weight else None
        overrides = _attention_probabilities(base_config) if base_config is not None else {}
        self.model = load_network(
            base,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            dtype=torch.float32,
            ignore_mismatched_sizes=True,
            **overrides,
        ).to(device)
        _order_head_rows(self.model, base, labels, on_event)
        # Training-only settings the attention loss changed, written back as the base has them when saving.
        self.base_settings = {name: getattr(base_config, name) for name in overrides if name in ATTENTION_DROPOUT}
        self.projection: torch.nn.Linear | None = None  # student width -> teacher width, for the feature loss
        self.ema = None
        self.history: list[dict] = []
        self.best: tuple[float, int] | None = None
        self.step = 0
        self.train_loss = SmoothedLoss()
        self.saved: tuple[int, float | None] | None = None  # (step, held-out accuracy) of the weights save() wrote

    # ---- optimisation -------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        projection = [] if self.projection is None else list(self.projection.named_parameters())
        for _name, parameter in [*self.model.named_parameters(), *projection]:
            # Biases and LayerNorm weights are not regularised: decaying them only hurts.
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.config.learning_rate, fused=True)

    def _schedule(self, optimizer, steps: int):
        warmup = int(steps * self.config.warmup_ratio)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: learning_rate_factor(step, steps, warmup, self.config.schedule)
        )

    def _update_ema(self) -> None:
        if self.config.ema_decay is None:
            return
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        if self.ema is None:
            self.ema = {n: p.clone() for n, p in params.items()}
            return
        # Early on the average would be dominated by the random head; warm the decay up.
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for name, value in params.items():
                self.ema[name].mul_(decay).add_(value, alpha=1 - decay)

    @contextmanager
    def _evaluation_weights(self):
        """Evaluate and save the moving average when one is kept, the raw weights otherwise."""
        if self.ema is None:
            yield
            return
        backup = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self._load_params(self.ema)
        try:
            yield
        finally:
            self._load_params(backup)

    def _load_params(self, values: dict) -> None:
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                parameter.copy_(values[name])

    # ---- the loop -----------------------------------------------------------------------
    def fit(
        self,
        train_ids,
        train_labels,
        held_ids,
        held_labels,
        encoder: TextEncoder,
        teacher_logits,
        teacher_features: np.ndarray | None = None,
        teacher_attention: AttentionMaps | None = None,
    ) -> list[dict]:
        config = self.config
        features_t = None
        if teacher_features is not None and config.feature_weight:
            # Centred: a model's first-token states share one dominant direction (cosine ~0.9999 to their mean in
            # the tiny test models), which would make every student look close; what tells texts apart is the rest.
            states = teacher_features.astype(np.float32)
            features_t = torch.from_numpy(states - states.mean(axis=0))
            self.projection = torch.nn.Linear(self.model.config.hidden_size, features_t.shape[1]).to(self.device)
        lengths = np.array([len(s) for s in train_ids])
        per_epoch = math.ceil(len(train_ids) / config.batch_size)
        steps = total_steps(config, len(train_ids))
        if config.max_steps and steps < config.max_steps:
            self.on_event(
                f"note: --epochs {config.epochs} ends the run at step {steps}, before --max-steps {config.max_steps} "
                "(--epochs 0: --max-steps alone)"
            )
        optimizer = self._optimizer()
        scheduler = self._schedule(optimizer, steps)
        if self.resumed_state is not None:
            self._restore(self.resumed_state, optimizer, scheduler)
            self.resumed_state = None
        labels_t = torch.from_numpy(train_labels)
        teacher_t = torch.from_numpy(teacher_logits) if teacher_logits is not None else None
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if config.precision == "bf16" else nullcontext()
        )
        progress = _progress(config.progress)
        task = progress.add_task("training", total=steps, completed=self.step, loss=float("nan"), rate=0.0)
        seen, window_start = 0, time.perf_counter()
        self.model.train()
        with progress, attention_kernels(str(self.device)):
            while self.step < steps:
                epoch, position = divmod(self.step, per_epoch)
                batches = length_bucketed_batches(
                    lengths, config.batch_size, np.random.default_rng([config.seed, epoch])
                )
                for rows in batches[position:]:
                    if self.step >= steps:
                        break
                    batch = encoder.pad([train_ids[i] for i in rows])
                    inputs = self._inputs(batch)
                    attention = teacher_attention if config.attention_weight else None
                    with autocast:
                        outputs = self.model(
                            **inputs,
                            output_hidden_states=features_t is not None,
                            output_attentions=attention is not None,
                        )
                    teacher = teacher_t[rows].to(self.device) if teacher_t is not None else None
                    loss = training_loss(
                        outputs.logits,
                        labels_t[rows].to(self.device),
                        teacher,
                        config.distill_alpha,
                        config.distill_temperature,
                    )
                    if features_t is not None:
                        first_token = outputs.hidden_states[-1][:, 0].float()
                        loss = loss + config.feature_weight * feature_loss(
                            self.projection(first_token), features_t[rows].to(self.device)
                        )
                    if attention is not None:
                        maps, map_lengths = attention.batch(rows, batch.input_ids.shape[1])
                        loss = loss + config.attention_weight * attention_loss(
                            outputs.attentions[-1], maps.to(self.device), map_lengths
                        )
                    if not torch.isfinite(loss):  # every later step, and the saved weights, would be NaN
                        raise InputError(
                            f"step {self.step + 1}: the training loss is {loss.item()}; a lower --learning-rate, or "
                            "--precision fp32, may keep it finite (nothing of this run was saved past its last "
                            "checkpoint)"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(
                        [p for group in optimizer.param_groups for p in group["params"]], 1.0
                    )
                    optimizer.step()
                    scheduler.step()
                    self.step += 1
                    self._update_ema()
                    self.train_loss.add(loss.item())
                    seen += len(rows)
                    rate = seen / (time.perf_counter() - window_start)
                    progress.update(task, completed=self.step, loss=self.train_loss.value, rate=rate)
                    end_of_epoch = self.step % per_epoch == 0 or self.step == steps
                    if end_of_epoch or (config.eval_every and self.step % config.eval_every == 0):
                        self._evaluate(held_ids, held_labels, encoder, self.step / per_epoch, self.train_loss.value)
                        self._checkpoint(optimizer, scheduler)
                    elif self.step % config.checkpoint_every == 0:
                        self._checkpoint(optimizer, scheduler)
        return self.history

    def _inputs(self, batch) -> dict:
        ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
        return torch_inputs(ids.to(self.device), mask.to(self.device), self.token_types)

    def _evaluate(self, held_ids, held_labels, encoder, epoch: float, train_loss) -> None:
        self.model.eval()
        with self._evaluation_weights():
            logits = predict_logits(self.model, held_ids, encoder, self.token_types, self.device, self.config.precision)
            accuracy = float((logits.argmax(-1) == held_labels).mean())
            if self.best is None or accuracy >= self.best[0]:
                self.best = (accuracy, self.step)
                self.checkpoints.mkdir(parents=True, exist_ok=True)
                _atomic_save(
                    {n: p.detach().cpu() for n, p in self.model.state_dict().items()}, self.checkpoints / "best.pt"
                )
        self.model.train()
        record = {"step": self.step, "epoch": round(epoch, 3), "held_out_accuracy": accuracy, "train_loss": train_loss}
        self.history.append(record)
        self.on_event(
            f"step {self.step} (epoch {epoch:.2f}): held-out accuracy {accuracy:.4f}, train loss {train_loss:.4f}"
        )

    # ---- checkpoints --------------------------------------------------------------------
    def _checkpoint(self, optimizer, scheduler) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        state = {
            "fingerprint": self.config.fingerprint(),
            "options": self.config.result_options(),
            "data": self.data_identity,
            "models": self.model_identity,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": self.ema,
            "projection": None if self.projection is None else self.projection.state_dict(),
            "history": self.history,
            "best": self.best,
            "train_loss": asdict(self.train_loss),
            "rng": torch.get_rng_state(),
            # Dropout on a GPU draws from the device's own generator, which get_rng_state leaves out: without it a
            # resumed CUDA run restarts that generator at --seed and drops other units than the uninterrupted run.
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        _atomic_save(state, self.checkpoints / "last.pt")

    def _checked_checkpoint(self) -> dict:
        """The checkpoint to resume from, refused where it was made with other options, data files or models."""
        # Onto the CPU first: the RNG state must live there, and a checkpoint from another device still loads.
        path = self.checkpoints / "last.pt"
        try:
            state = torch.load(path, weights_only=False, map_location="cpu")
            fingerprint = state["fingerprint"]
        except Exception as error:  # truncated (a full disk, a partial copy) or not a checkpoint of this tool
            raise InputError(
                f"--resume: {path} is not a readable checkpoint ({type(error).__name__}); start a new output directory"
            ) from None
        stored = state.get("options")  # compared key by key where kept: an option made neutral since is left out
        changed = "" if stored is None else _changed_options(stored, self.config.result_options())
        if changed or (stored is None and fingerprint != self.config.fingerprint()):
            raise InputError(
                f"--resume: the checkpoint in {self.checkpoints} was made with different options"
                f"{f' ({changed})' if changed else ''}; resume with the same options or start a new output directory"
            )
        # Checkpoints made before the data (or the models) were recorded hold none: nothing to compare.
        changed = [
            *_changed_data(state.get("data"), self.data_identity, self.config.data_files()),
            *_changed_files(state.get("models"), self.model_identity),
        ]
        if changed:
            raise InputError(
                f"--resume: {', '.join(changed)} changed since the checkpoint in {self.checkpoints} was made; resume "
                "with the same data and models or start a new output directory"
            )
        return state

    def _restore(self, state: dict, optimizer, scheduler) -> None:
        self.model.load_state_dict(state["model"])
        if self.projection is not None:
            self.projection.load_state_dict(state["projection"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["ema"] is not None:
            self.ema = {name: value.to(self.device) for name, value in state["ema"].items()}
        self.history, self.best, self.step = state["history"], state["best"], state["step"]
        # Checkpoints made before the smoothed loss was kept: it restarts (bias-corrected, from this step's losses).
        self.train_loss = SmoothedLoss(**state.get("train_loss", {}))
        torch.set_rng_state(state["rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:  # none from a CPU run (device is neutral)
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.on_event(f"resumed at step {self.step}")

    def save(self, base: ModelDir) -> Path:
        """Write the weights --select chooses (the moving average where one is kept); `saved` says which."""
        if self.config.select == "best" and (self.checkpoints / "best.pt").is_file():
            self.model.load_state_dict(torch.load(self.checkpoints / "best.pt", map_location="cpu"))
            chosen = f"best held-out checkpoint (step {self.best[1]}, accuracy {self.best[0]:.4f})"
            self.saved = (self.best[1], self.best[0])
        else:
            if self.ema is not None:
                self._load_params(self.ema)
            chosen = f"final weights (step {self.step})"
            # The run evaluates at its last step (the end of the last epoch or of --max-steps), as these weights.
            evaluated = [h["held_out_accuracy"] for h in self.history if h["step"] == self.step]
            self.saved = (self.step, evaluated[-1] if evaluated else None)
        self.model.eval()
        dtype = torch.float16 if self.config.save_dtype == "float16" else torch.float32
        for name, value in self.base_settings.items():
            setattr(self.model.config, name, value)
        with transformers_quiet():
            self.model.to(dtype).save_pretrained(self.output, safe_serialization=True)
        for weights in self.output.glob("*.safetensors"):
            as_umask_allows(weights)
        self.model.to(torch.float32)
        copy_tokenizer_files(base.path, self.output)
        record = {
            "config": {k: v for k, v in vars(self.config).items()},
            "base_model_hash": base.content_hash,
            "labels": self.labels,
            "saved": chosen,
            "held_out_accuracy": self.saved[1],
            "history": self.history,
            "hardware": {
                "machine": platform.machine(),
                "processor": platform.processor(),
                "cpus": usable_cpus(),
                "device": str(self.device),
            },
            "torch": torch.__version__,
        }
        (self.output / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        self.on_event(f"saved {chosen} to {self.output}")
        return self.output


def _attention_probabilities(base_config) -> dict:
    """Loading options under which the student's forward pass returns the attention distributions the attention
    loss compares: eager attention (the fused kernels return none), without attention dropout (the returned
    weights are taken after it, so a dropped key would count as a probability of 0 the teacher gave mass to)."""
    dropout = {name: 0.0 for name in ATTENTION_DROPOUT if hasattr(base_config, name)}
    return {"attn_implementation": "eager", **dropout}


def training_loss(logits, labels, teacher, alpha: float, temperature: float):
    """Cross-entropy with the labels; with a teacher, mixed as alpha x that + (1 - alpha) x T^2 x KL to the
    teacher's distribution softened by temperature T. Rows labelled UNLABELLED (perturbed copies) learn from the
    teacher alone."""
    if teacher is None:
        return F.cross_entropy(logits.float(), labels)
    t = temperature
    soft = F.kl_div(F.log_softmax(logits.float() / t, dim=-1), F.softmax(teacher / t, dim=-1), reduction="none")
    soft = soft.sum(-1) * (t * t)
    hard = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    per_row = torch.where(labels != UNLABELLED, alpha * hard + (1 - alpha) * soft, soft)
    return per_row.mean()


def feature_loss(student, teacher):
    """Squared distance between unit-normalised states (0 to 4), as patient knowledge distillation (Sun et al.,
    2019) compares them: the direction carries what the teacher's head reads; the scale differs between models.
    The teacher's states come centred (Trainer.fit)."""
    return (F.normalize(student.float(), dim=-1) - F.normalize(teacher.float(), dim=-1)).pow(2).sum(-1).mean()


def learning_rate_factor(step: int, steps: int, warmup: int, kind: str) -> float:
    """The share of the peak learning rate at optimiser `step`: a linear warm-up, then linear, cosine or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return max(0.0, 1 - progress) if kind == "linear" else 0.5 * (1 + math.cos(math.pi * progress))


def _order_head_rows(network, base: ModelDir, labels: list[str], on_event: Callable[[str], None]) -> None:
    """Put the rows of the base's classification head in the run's class order. Loading keeps a head of the right
    shape row by row (models/network.py load_network), but the run's classes may come in another order than the
    head names them (--labels, or a teacher's order): kept by position, the fine-tune would start inverted. Heads
    without class names (LABEL_0...) are kept by position, as their ids are the data's; one naming other classes is
    kept by position with a warning."""
    head_names = base.labels
    architectures = base.config.get("architectures") or []
    carries_head = any(name.endswith("ForSequenceClassification") for name in architectures)
    if not carries_head or head_names == labels or len(head_names) != len(labels):
        return  # no head in the weights, nothing to reorder, or a head of another size: a new one is drawn
    if head_names == generic_names(len(labels)):
        return
    positions = matching_classes(labels, head_names)  # in any case: --labels negative,positive names NEGATIVE too
    if positions is None:
        on_event(
            f"warning: {base.path.name}'s head names its classes {', '.join(head_names)}; its rows are kept by "
            f"position as {', '.join(labels)}"
        )
        return
    if positions == list(range(len(labels))):
        return
    parameters = dict(network.named_parameters())
    weight = next(name for name in HEAD_OUTPUT_WEIGHTS if name in parameters)  # every architecture names one
    order = torch.tensor(positions)
    with torch.no_grad():
        for name in (weight, weight.removesuffix("weight") + "bias"):
            parameters[name].copy_(parameters[name][order].clone())
    on_event(f"{base.path.name}'s head rows reordered from {', '.join(head_names)} to this run's {', '.join(labels)}")


def _changed_files(stored: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """The paths whose content hash differs between a checkpoint's record and now (none where it kept none)."""
    if stored is None:
        return []
    return sorted(path for path in {*stored, *now} if stored.get(path) != now.get(path))


def _changed_data(stored: dict[str, str] | None, now: dict[str, str], paths: dict[str, str]) -> list[str]:
    """The data files (by role, with their paths now) whose content differs from the checkpoint's record."""
    if stored is None:
        return []
    if any(key.startswith(os.sep) for key in stored):  # kept by path before 2026-12-06: their contents, as a whole
        return [] if sorted(stored.values()) == sorted(now.values()) else ["the data files"]
    return [f"{role} {paths.get(role, '')}".strip() for role in _changed_files(stored, now)]


def _changed_options(then: dict | None, now: dict) -> str:
    """'name old then, new now' for each option that differs, leaving out those a resumption may change (kept by
    checkpoints written before they were); nothing for checkpoints that kept no options (before 2026-12-03)."""
    if then is None:
        return ""
    return ", ".join(
        f"{k} {then.get(k)!r} then, {now.get(k)!r} now"
        for k in sorted(then.keys() | now.keys())
        if then.get(k) != now.get(k) and k not in RESUME_NEUTRAL | DATA_FILE_OPTIONS
    )


def _atomic_save(obj, path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.0f} ex/s"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def predict_logits(
    model, sequences, encoder: TextEncoder, token_types: bool, device, precision: str, batch_size: int = 128
) -> np.ndarray:
    """Logits for token-id sequences in length-sorted batches (inference mode, no dropout)."""
    logits = np.zeros((len(sequences), model.config.num_labels), dtype=np.float32)
    for rows, outputs in batched_outputs(model, sequences, encoder, token_types, device, precision, batch_size):
        logits[rows] = outputs.logits.float().cpu().numpy()
    return logits


def predict_first_token_states(
    model, sequences, encoder: TextEncoder, token_types: bool, device, precision: str, batch_size: int = 128
) -> np.ndarray:
    """The last layer's state of each sequence's first token ([CLS], <s>: what a classification head reads), fp16."""
    states = np.zeros((len(sequences), model.config.hidden_size), dtype=np.float16)
    batches = batched_outputs(model, sequences, encoder, token_types, device, precision, batch_size, hidden=True)
    for rows, outputs in batches:
        states[rows] = outputs.hidden_states[-1][:, 0].float().cpu().numpy()
    return states


def batched_outputs(
    model, sequences, encoder, token_types, device, precision, batch_size, hidden=False, attentions=False
):
    """(row indices, model outputs) over length-sorted batches, in inference mode (no dropout)."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with torch.inference_mode(), autocast, attention_kernels(str(device)):
        for rows in length_sorted_batches([len(s) for s in sequences], batch_size):
            batch = encoder.pad([sequences[i] for i in rows])
            ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
            inputs = torch_inputs(ids.to(device), mask.to(device), token_types)
            yield rows, model(**inputs, output_hidden_states=hidden, output_attentions=attentions)


def copy_tokenizer_files(source: Path, target: Path) -> None:
    for name in (*TOKENIZER_FILES, *TOKENIZER_SETTINGS):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)

"""What a training run is: its options, and the step count they imply."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastsentiment.models import ModelDir

# Options that may differ between an interrupted run and its resumption without changing the result: where the run
# writes (a folder moved or renamed resumes) and how often it saves a checkpoint among them.
RESUME_NEUTRAL = {"resume", "device", "progress", "output_dir", "checkpoint_every"}
# The data files, compared by what they hold (`data_identity`), not by where they lie: a copy elsewhere resumes.
DATA_FILE_OPTIONS = {"train_file", "eval_file", "teacher_logits", "unlabelled"}
# The options compared that name folders (models may also be built-in names or hub ids); the output folder and the
# data files are not compared by where they lie.
PATH_OPTIONS = ("base_model", "teachers")
# Options added after checkpoints existed: left out of the fingerprint while unset, so those checkpoints resume.
ADDED_LATER = {"teacher_logits", "augment", "unlabelled", "feature_weight", "attention_weight"}


@dataclass
class TrainConfig:
    base_model: str
    train_file: str
    output_dir: str
    eval_file: str | None = None
    eval_fraction: float = 0.02
    text_column: str | None = None  # None: 'sentence', else 'text'
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
    precision: str = "auto"  # bf16 autocast, fp32, or auto: bf16 where the device computes it natively
    eval_every: int | None = None
    checkpoint_every: int = 200
    teachers: list[str] = field(default_factory=list)
    # Earlier runs' teacher-logits-*.npz, instead of running teachers; several: their mean, as for `teachers`.
    teacher_logits: list[str] = field(default_factory=list)
    augment: int = 0  # perturbed copies of each long training sentence for the teacher to label (train/augment.py)
    # Files of texts without labels that the teacher labels for the student (e.g. scripts/fetch_imdb_sentences.py).
    unlabelled: list[str] = field(default_factory=list)
    distill_alpha: float = 0.5
    # Weight of the feature loss (train/loop.py feature_loss): the student's last-layer first-token state, through a
    # learned projection to the teacher's width, pulled towards the teacher's; 0: logits only.
    feature_weight: float = 0.0
    # Weight of the attention loss (train/attention.py): the student's last-layer self-attention distributions pulled
    # towards the teacher's (same heads, same tokens); 0: none.
    attention_weight: float = 0.0
    distill_temperature: float = 2.0
    ema_decay: float | None = None
    select: str = "best"
    save_dtype: str = "float32"
    resume: bool = False
    progress: bool = True

    def result_options(self) -> dict:
        """The options a resumed run must share with the interrupted one: every option that shapes the result. Models
        are named as absolute paths (base and ./base are one folder); the data files by what they hold
        (`data_identity`)."""
        options = {
            k: v
            for k, v in asdict(self).items()
            if k not in RESUME_NEUTRAL | DATA_FILE_OPTIONS and not (k in ADDED_LATER and not v)
        }
        for name in PATH_OPTIONS:
            if isinstance(options.get(name), str):
                options[name] = _absolute(options[name])
            elif isinstance(options.get(name), list):
                options[name] = [_absolute(path) for path in options[name]]
        return options

    def data_files(self) -> dict[str, str]:
        """Every data file the run reads, by its role (as a message names it), as an absolute path."""
        roles = {"the training file": self.train_file, "--eval-file": self.eval_file}
        roles |= {f"--teacher-logits {number}": path for number, path in enumerate(self.teacher_logits, 1)}
        roles |= {f"--unlabelled {number}": path for number, path in enumerate(self.unlabelled, 1)}
        return {role: _absolute(path) for role, path in roles.items() if path}

    def data_identity(self) -> dict[str, str]:
        """sha256 of every data file the run reads, by its role: a resumed run notices a file changed under its name,
        and takes the same content from wherever it lies now."""
        return {role: _file_sha256(Path(path)) for role, path in self.data_files().items() if Path(path).is_file()}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.result_options(), sort_keys=True).encode()).hexdigest()[:16]


def model_identity(models: Sequence[ModelDir]) -> dict[str, str]:
    """The content hash of every model a run reads (base, teachers) by folder, as `data_identity` holds the data's:
    a resumed run notices a model replaced under its path (a base of another size would not take the checkpoint's
    weights; another teacher would mix two teachers' logits in one student). The hash is computed once per model:
    the run needs it anyway (the teacher-logits cache key, training.json's base_model_hash)."""
    return {str(model.path.resolve()): model.content_hash for model in models}


def _absolute(path: str) -> str:
    """An existing file or folder as its absolute path; anything else (a model's name) as given."""
    where = Path(path).expanduser()
    return str(where.resolve()) if where.exists() else path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def total_steps(config: TrainConfig, examples: int) -> int:
    if config.max_steps and config.epochs < 1:  # --max-steps alone: as many epochs as those steps take
        return config.max_steps
    steps = math.ceil(examples / config.batch_size) * config.epochs
    return min(steps, config.max_steps) if config.max_steps else steps

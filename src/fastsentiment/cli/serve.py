"""`fastsentiment serve`."""

from __future__ import annotations

import typer

from fastsentiment.cli.app import app
from fastsentiment.cli.options import (
    BackendOption,
    DeviceOption,
    LabelsOption,
    MaxLengthOption,
    ModelOption,
    PrecisionOption,
    label_names,
    load_classifier,
)
from fastsentiment.serve import PAD_TO_MULTIPLE_OF, WARM_UP_LENGTH


@app.command()
def serve(
    model: ModelOption = None,
    backend: BackendOption = "auto",
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    max_length: MaxLengthOption = None,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    batching: bool = typer.Option(
        True, "--batching/--no-batching", help="Dynamic batching (off: one text per model call)."
    ),
    max_batch_size: int = typer.Option(64, "--max-batch-size", min=1, help="Texts gathered into one batching step."),
    model_batch_size: int | None = typer.Option(
        None,
        "--model-batch-size",
        min=1,
        help="Texts per model call: a gathered batch runs as length-sorted calls of this size "
        "(default: 8 on a CPU, 256 on a CUDA GPU).",
    ),
    max_batch_tokens: int | None = typer.Option(
        None,
        "--max-batch-tokens",
        min=2,
        help="Tokens (summed over its texts) in a gathered batch: how much work runs before the queue is looked at "
        "again, and so about how long a short request waits behind a large one \\[default: 128 per text of a model "
        "call: 1,024 on a CPU, 32,768 on a CUDA GPU].",
    ),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", min=0, help="Longest a lone request waits for company."),
    max_queue: int = typer.Option(2048, "--max-queue", min=1, help="Queued texts before answering 503."),
    max_inputs: int = typer.Option(256, "--max-inputs", min=1, help="Texts per request."),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1),
    body_timeout: float = typer.Option(
        30.0, "--body-timeout", min=0.001, help="Seconds a request's body may take to arrive (then 408)."
    ),
    header_timeout: float = typer.Option(
        20.0,
        "--header-timeout",
        min=0.001,
        help="Seconds a request's line and headers may take to arrive from its first byte (then 408); a connection "
        "on which no request begins for as long is closed.",
    ),
    warm_up_length: int = typer.Option(
        WARM_UP_LENGTH,
        "--warm-up-length",
        min=0,
        help="Before the server is ready, every shape of a model call up to this many tokens (at most the model's): "
        "1 to --model-batch-size texts (at most --max-batch-size) at every padded length, runs once on each of its "
        "model's streams, where the runtime prepares kernels per input shape (OpenVINO: 4 to 8 ms the first time a "
        "shape is met; 3 s of start-up for the built-in model on 2 cores, growing with the square of the texts per "
        "call); 0: none.",
    ),
    pad_to_multiple_of: int | None = typer.Option(
        None,
        "--pad-to-multiple-of",
        min=1,
        help="Pad each model call to a multiple of this many tokens: fewer input shapes to prepare and to warm up "
        f"\\[default: {PAD_TO_MULTIPLE_OF} where the runtime prepares kernels per shape (OpenVINO), else 1].",
    ),
    labels: LabelsOption = None,
) -> None:
    """Serve the model over HTTP (POST /predict, /health, /info, /metrics; docs at /docs)."""
    from fastsentiment.errors import missing_extra

    try:
        from fastsentiment.serve.app import ServerSettings, create_app
        from fastsentiment.serve.batcher import BatchSettings
        from fastsentiment.serve.runner import run
    except ImportError as error:
        raise missing_extra(error.name or "fastapi", "server", "fastsentiment serve") from None
    from fastsentiment.backends.registry import checked_backend, default_batch_size
    from fastsentiment.models import resolve_model
    from fastsentiment.serve.runner import check_port

    model_dir = resolve_model(model)  # a bad --model (or --labels) fails now, with one line, not inside the server
    if labels:
        model_dir.with_labels(label_names(labels))
    checked_backend(backend, device, precision, model_dir)  # likewise an unknown backend, device or precision
    port = check_port(host, port)  # and a port taken or not ours to take, before minutes of tuning (0: a free one)
    settings = ServerSettings(
        batching=BatchSettings(max_batch_size, max_batch_tokens, max_wait_ms, max_queue),
        dynamic_batching=batching,
        max_inputs=max_inputs,
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout,
        header_timeout_s=header_timeout,
        warm_up_length=warm_up_length,
        pad_to_multiple_of=pad_to_multiple_of,
    )

    def load():
        # A server runs long enough for `auto` to be worth measuring before it opens (once per model and CPU).
        classifier = load_classifier(
            model, backend, device, precision, model_batch_size, max_length, workload="serve", tune=True, labels=labels
        )
        if model_batch_size is None:  # the device is known once loaded (auto)
            classifier.batch_size = default_batch_size(classifier.backend.device, serving=True)
        return classifier

    server = create_app(load, settings)
    typer.echo(f"fastsentiment serving on http://{host}:{port} (docs at /docs)", err=True)
    run(server, host, port)

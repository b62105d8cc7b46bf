"""`fastsentiment export onnx|openvino|coreml`: artefacts for use outside the tool."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import typer

from fastsentiment.cache import open_or_rebuild
from fastsentiment.cli.app import app
from fastsentiment.cli.options import expand_home
from fastsentiment.errors import FastSentimentError, InputError, first_line
from fastsentiment.outputs import check_output_place, through_link

export_app = typer.Typer(help="Write a model as ONNX, OpenVINO IR or a CoreML package.", no_args_is_help=True)
app.add_typer(export_app, name="export")

ModelArgument = typer.Argument(..., help="Built-in name, model directory or hub id.")


@export_app.command("onnx")
def export_onnx_command(
    model: str = ModelArgument,
    out: Path = typer.Argument(..., help="The .onnx file to write (replaces one there).", callback=expand_home),
    precision: str = typer.Option(
        "int8",
        "--precision",
        "-p",
        help="int8 (CPU), int8-dynamic (CPU, faster, less exact), fp32, fp16 (CUDA), or plain (unfused fp32); "
        "also the benchmarks' int8-dynamic-7bit and plain-int8.",
    ),
) -> None:
    """ONNX with dynamic batch and sequence axes, as the onnx backend runs it."""
    from fastsentiment.backends.onnx_backend import onnx_file
    from fastsentiment.export.onnx import VARIANTS, weights_file
    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import load_tokenizer

    if precision not in VARIANTS:
        raise InputError(f"unknown ONNX precision {precision!r}; choose one of {', '.join(VARIANTS)}")
    model_dir = resolve_model(model)  # before the output's folders are made
    load_tokenizer(model_dir)  # a folder that cannot serve is refused as every command refuses it, before any work
    out = _checked_out(out, ".onnx")
    # A cached export damaged on disk would be copied and reported as written: parsed first (built again if need be).
    source = open_or_rebuild(onnx_file(model_dir, precision), _parsed_onnx, lambda: onnx_file(model_dir, precision))
    files = [weights_file(out), out] if weights_file(source).exists() else [out]  # the graph last: not without weights
    _write_whole(out, [file.name for file in files], lambda scratch: _copy_onnx(source, scratch / out.name))
    megabytes = sum(file.stat().st_size for file in files) / 1e6
    typer.echo(f"wrote {' and '.join(map(str, files))} ({megabytes:.1f} MB, {precision})")


@export_app.command("openvino")
def export_openvino_command(
    model: str = ModelArgument,
    out: Path = typer.Argument(
        ..., help="The .xml file to write (weights go beside it as .bin).", callback=expand_home
    ),
    fp16_weights: bool = typer.Option(False, "--fp16-weights", help="Store weights in fp16 (half the size)."),
) -> None:
    """OpenVINO IR (.xml + .bin) from the plain ONNX export."""
    from fastsentiment.backends.onnx_backend import onnx_file
    from fastsentiment.errors import missing_extra
    from fastsentiment.export.onnx import weights_file
    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import load_tokenizer

    try:
        import openvino as ov
    except ImportError:
        raise missing_extra("openvino", "openvino", "OpenVINO export") from None
    model_dir = resolve_model(model)  # before the output's folders are made
    load_tokenizer(model_dir)  # a folder that cannot serve is refused as every command refuses it, before any work
    out = _checked_out(out, ".xml")
    source = onnx_file(model_dir, "plain")
    network = open_or_rebuild(
        source, lambda path: ov.Core().read_model(str(path)), lambda: onnx_file(model_dir, "plain")
    )
    beside = weights_file(source)  # a graph too large for one protobuf keeps its weights there
    weights = source.stat().st_size + (beside.stat().st_size if beside.is_file() else 0)
    _write_whole(
        out,
        [out.with_suffix(".bin").name, out.name],  # the .xml last: no .xml without its weights
        lambda scratch: ov.save_model(network, str(scratch / out.name), compress_to_fp16=fp16_weights),
        needs_bytes=weights // 2 if fp16_weights else weights,
    )
    typer.echo(f"wrote {out} and {out.with_suffix('.bin')}")


def _write_whole(out: Path, names: list[str], write: Callable[[Path], object], needs_bytes: int = 0) -> None:
    """`write(scratch)` writes the files `names` into a scratch folder beside `out`; they are moved into place only
    whole. A write that fails (a full disk, a folder where a file goes) is one line naming what was asked for, and
    leaves no truncated file behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    target = out
    try:
        write(scratch)
        for name in names:
            target = out.parent / name
            os.replace(scratch / name, target)
    except OSError as error:
        raise FastSentimentError(f"cannot write {target}: {error.strerror or error}") from None
    except RuntimeError as error:  # OpenVINO's writer reports a failed write this way, without the system's reason
        reason = os.strerror(errno.ENOSPC) if _disk_full(scratch, needs_bytes) else first_line(error)
        raise FastSentimentError(f"cannot write {out}: {reason}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _disk_full(folder: Path, needs_bytes: int) -> bool:
    """Whether the file system holding `folder` lacks room for about `needs_bytes` (what the write was to hold), or
    has no block left: what a write that failed there ran into, where the writer's error says only that its stream
    failed ("basic_ios::clear: iostream error") and has removed what it wrote."""
    try:
        free = os.statvfs(folder)
    except OSError:
        return False
    return free.f_bavail == 0 or free.f_bavail * free.f_frsize < needs_bytes


@export_app.command("coreml")
def export_coreml_command(
    model: str = ModelArgument,
    out: Path = typer.Argument(
        ..., help="The .mlpackage to write (replaces an earlier package there).", callback=expand_home
    ),
    seq_lengths: str | None = typer.Option(
        None,
        "--seq-lengths",
        help="Fixed length, or comma-separated enumerated lengths: 32,64,128 \\[default: 128, or the model's limit "
        "where it is lower].",
    ),
) -> None:
    """CoreML ML program (fp16, int32 inputs) of the Neural-Engine layout. Runs on Linux; predicts on macOS."""
    from rich.console import Console

    from fastsentiment.export.coreml import export_coreml
    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import load_tokenizer

    model_dir = resolve_model(model)
    load_tokenizer(model_dir)
    if seq_lengths is None:
        lengths = [min(128, model_dir.max_length)]
    else:
        try:
            lengths = [int(part) for part in seq_lengths.split(",") if part.strip()]
        except ValueError:
            raise InputError(f"--seq-lengths takes comma-separated integers, got {seq_lengths!r}") from None
    # Bound to the real stderr: the conversion silences coremltools' own progress bars by redirecting sys.stderr.
    with Console(file=sys.stderr).status("converting to a CoreML ML program"):
        export_coreml(model_dir, out, lengths)
    typer.echo(f"wrote {out} (fp16, input lengths {', '.join(map(str, sorted(set(lengths))))})")


def _copy_onnx(source: Path, target: Path) -> None:
    """Copy an ONNX file; one that keeps its weights apart with them, renamed after `target` (the graph names its
    weights file, so its copy names the new one)."""
    from fastsentiment.errors import missing_extra
    from fastsentiment.export.onnx import weights_file

    if not weights_file(source).exists():
        shutil.copyfile(source, target)
        return
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ImportError:
        raise missing_extra("onnx", "export", f"copying {source.name}, whose weights lie in a file beside it") from None
    graph = onnx.load(str(source), load_external_data=False)
    constants = (attribute.t for node in graph.graph.node for attribute in node.attribute if attribute.HasField("t"))
    for tensor in (*graph.graph.initializer, *constants):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = weights_file(target).name
    onnx.save(graph, str(target))
    shutil.copyfile(weights_file(source), weights_file(target))


def _parsed_onnx(path: Path) -> Path:
    """`path`, once the onnx package (where installed: the export extra) has read it as a model."""
    try:
        import onnx
    except ImportError:  # an install with the runtime alone copies the file as it is
        return path
    onnx.load(str(path), load_external_data=False)
    return path


def _checked_out(path: Path, suffix: str) -> Path:
    """The output's name, and that it can be written there (missing folders are created), before any export; the
    path then written (through a link, if `path` is one)."""
    if path.suffix != suffix:
        raise InputError(f"{path}: expected a {suffix} file name")
    target = through_link(path)  # the place checked is the one written: a link's target, not the link's own folder
    check_output_place(target, name="OUT")
    return target

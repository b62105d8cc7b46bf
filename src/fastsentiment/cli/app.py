"""The typer application every command module registers itself on, and the options that apply to all."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="fastsentiment",
    help="Sentiment classification with BERT-family models on the fastest backend this machine has.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
state = {"debug": False}


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    state["debug"] = debug

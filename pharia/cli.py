"""`pharia ...`: every stage runnable from a shell. Each stage owns its sub-command module; this file
only assembles them and turns pharia's own errors into one-line messages with a non-zero exit."""

from __future__ import annotations

import sys

import typer

from pharia import environment

app = typer.Typer(
    name="pharia",
    help="pharia: raw text -> validated data -> trained, evaluated, registered and audited LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from pharia.data.cli import app as data_app
    from pharia.evaluate.cli import app as eval_app
    from pharia.model.cli import app as model_app
    from pharia.train.cli import app as train_app

    app.add_typer(data_app, name="data")
    app.add_typer(model_app, name="model")
    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")


@app.command("config")
def show_config(
    preset: str = typer.Argument("tiny", help="preset name from configs/ or a YAML file"),
) -> None:
    """Validate a preset or config file and print it with its hash."""
    import json

    from pharia.config import load_config

    cfg = load_config(preset)
    typer.echo(json.dumps({"config_hash": cfg.config_hash(), **cfg.model_dump(mode="json")}, indent=2))


def main() -> None:
    from pharia.errors import PhariaError

    environment.configure()
    _register()
    try:
        app()
    except PhariaError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)

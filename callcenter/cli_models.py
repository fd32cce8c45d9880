"""`callcenter models list | install NAME | remove NAME`: official Vosk models in `speech.models_dir`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from callcenter.core.config import ConfigError, load_settings
from callcenter.speech import models as vosk_models

models_app = typer.Typer(
    help="Install and remove speech models (official Vosk models).", no_args_is_help=True
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.", dir_okay=False)]
DirOpt = Annotated[
    Path | None, typer.Option("--models-dir", help="Overrides speech.models_dir.", file_okay=False)
]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Overrides speech.model_catalog_url.")]


def _where(config: Path | None, models_dir: Path | None, url: str | None) -> tuple[Path, str]:
    try:
        settings = load_settings(config, {})
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    return models_dir or settings.speech.models_dir, url or settings.speech.model_catalog_url


@models_app.command("list")
def models_list(
    available: Annotated[
        bool, typer.Option("--available", help="List the catalog, not what is installed.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
    models_dir: DirOpt = None,
    url: UrlOpt = None,
) -> None:
    """Installed models (or, with --available, the official catalog)."""
    root, base = _where(config, models_dir, url)
    rows: list[dict[str, Any]]
    try:
        if available:
            catalog = vosk_models.fetch_catalog(base)
            rows = [{"name": e.name, "language": e.lang, "size": e.size} for e in catalog if not e.obsolete]
        else:
            installed = vosk_models.list_installed(root)
            rows = [{"name": m.name, "path": str(m.path), "size": m.size_bytes} for m in installed]
    except vosk_models.ModelInstallError as exc:
        typer.echo(f"models: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no models installed" if not available else "the catalog is empty")
    for row in rows:
        typer.echo("  ".join(str(v) for v in row.values()))


@models_app.command("install")
def models_install(
    name: Annotated[str, typer.Argument(help="Model name, e.g. vosk-model-small-en-us-0.15.")],
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected SHA-256 of the zip.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an installed copy.")] = False,
    config: ConfigOpt = None,
    models_dir: DirOpt = None,
    url: UrlOpt = None,
) -> None:
    """Download (resuming a partial download), verify and unpack a model."""
    root, base = _where(config, models_dir, url)
    with typer.progressbar(length=1, label=f"downloading {name}", show_pos=True) as bar:
        state = {"total": 0, "shown": 0}

        def progress(done: int, total: int | None) -> None:
            if total and total != state["total"]:
                state["total"] = total
                bar.length = total
            bar.update(done - state["shown"])
            state["shown"] = done

        try:
            path = vosk_models.install(
                name, root, base_url=base, progress=progress, sha256=sha256, replace=replace
            )
        except vosk_models.ModelInstallError as exc:
            typer.echo(f"\nmodels: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"installed {name} in {path}")


@models_app.command("remove")
def models_remove(
    name: Annotated[str, typer.Argument(help="Installed model name.")],
    config: ConfigOpt = None,
    models_dir: DirOpt = None,
) -> None:
    """Remove an installed model."""
    root, _ = _where(config, models_dir, None)
    try:
        removed = vosk_models.remove(name, root)
    except vosk_models.ModelInstallError as exc:
        typer.echo(f"models: {exc}", err=True)
        raise typer.Exit(1) from None
    if not removed:
        typer.echo(f"models: {name} is not installed in {root}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {name}")

"""`edge backup FILE` and `edge restore FILE`: thin faces over edge.ops.backup."""

from __future__ import annotations

from pathlib import Path

import typer

from edge.cli.common import load_or_exit
from edge.ops.backup import BackupError, create_backup, restore_backup


def backup(
    file: Path = typer.Argument(..., help="Archive to write (tar.gz), e.g. /root/gw-2026-11-25.tar.gz."),
    config: Path = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file."),
) -> None:
    """Back up configuration, identity, secrets, outbox and module state; safe while the gateway runs."""
    loaded, _ = load_or_exit(config, secrets=False)
    try:
        manifest = create_backup(
            loaded.path, loaded.data_dir, loaded.config.storage.path, loaded.config.gateway.id, file
        )
    except (BackupError, OSError) as exc:
        typer.echo(f"backup failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{file}: {len(manifest.files)} files, {manifest.events()} events (mode 0600: it holds secrets)"
    )


def restore(
    file: Path = typer.Argument(..., help="Archive written by `edge backup`."),
    config: Path = typer.Option(
        Path("edge.toml"), "--config", "-c", help="Where to put the configuration; data goes to its data_dir."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing configuration and data."),
) -> None:
    """Restore a backup, e.g. onto a new machine; the gateway must be stopped."""
    try:
        result = restore_backup(file, config, force=force)
    except (BackupError, OSError) as exc:
        typer.echo(f"restore failed: {exc}", err=True)
        raise typer.Exit(1) from None
    m = result.manifest
    typer.echo(
        f"restored gateway {m.gateway_id} (backup of release {m.release}): {len(m.files)} files, {m.events()} events"
    )
    typer.echo(
        f"configuration {result.config}, data {result.data_dir}; start it with `edge run -c {result.config}`"
    )

"""`edge init`: first-run setup (edge.ops.firstrun): starter configuration, identity and secrets."""

from __future__ import annotations

from pathlib import Path

import typer

from edge.ops.firstrun import init_gateway


def init(
    config: Path = typer.Option(Path("edge.toml"), "--config", "-c", help="Configuration file to write."),
    gateway_id: str | None = typer.Option(None, "--id", help="Gateway id; default: this host's name."),
    tenant: str = typer.Option("default", "--tenant", help="The first tenant's id."),
    site: str = typer.Option("site", "--site", help="The first site's id."),
    data_dir: str = typer.Option("var", "--data-dir", help="Data directory (relative to the config file)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing configuration file."),
) -> None:
    """Write a commented starter configuration, the gateway's key pair and certificate, and its secrets."""
    try:
        result = init_gateway(
            config, gateway_id=gateway_id, tenant=tenant, site=site, data_dir=data_dir, force=force
        )
    except FileExistsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:
        typer.echo(f"cannot initialise: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"configuration  {result.config}")
    typer.echo(f"data           {result.data_dir}")
    if result.identity is not None:
        typer.echo(
            f"identity       {result.identity.certificate_pem} (key 0600, thumbprint {result.identity.thumbprint})"
        )
    else:
        typer.echo(f"identity       kept the existing one in {result.data_dir}")
    for path in result.created_secrets:
        typer.echo(f"secret         {path} (0600)")
    typer.echo(f"next: edit it, then `edge config check {config}` and `edge run -c {config}`")

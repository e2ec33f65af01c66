"""`edge certs`: the gateway's application instance certificate (for OPC UA and other secure protocols)."""

from __future__ import annotations

from pathlib import Path

import typer

from edge.sdk.certs import default_dns_names, write_application_certificate

app = typer.Typer(no_args_is_help=True, help="Create the gateway's application instance certificate.")


@app.callback()
def certs() -> None:
    """The gateway's own certificates (a group, so `edge certs create` stays a sub-command)."""


@app.command("create")
def create(
    out: Path = typer.Option(
        ..., "--out", help="Directory for certificate.der, certificate.pem, private_key.pem."
    ),
    uri: str = typer.Option(
        ...,
        "--uri",
        help="Application URI, e.g. urn:acme:edge-gateway:plant-room-1 (put the same in the config).",
    ),
    name: str = typer.Option(..., "--name", help="Application name (the certificate's common name)."),
    days: int = typer.Option(365, "--days", min=1, max=7300, help="Validity in days."),
    dns: list[str] = typer.Option(
        None, "--dns", help="DNS name (repeatable); default: localhost and this host."
    ),
    ip: list[str] = typer.Option(None, "--ip", help="IP address (repeatable); default: 127.0.0.1."),
    organization: str | None = typer.Option(None, "--org", help="Organization name in the subject."),
    force: bool = typer.Option(False, "--force", help="Replace an existing certificate and key."),
) -> None:
    """Create a self-signed certificate and key; give certificate.der to each server's trust list."""
    try:
        files = write_application_certificate(
            out,
            application_uri=uri,
            common_name=name,
            days=days,
            dns_names=dns or default_dns_names(),
            ip_addresses=ip or ["127.0.0.1"],
            organization=organization,
            overwrite=force,
        )
    except FileExistsError as exc:
        typer.echo(f"{exc} (use --force to replace it)", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:
        typer.echo(f"cannot create the certificate: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"certificate  {files.certificate}  (DER; give it to the servers' trust lists)")
    typer.echo(f"             {files.certificate_pem}  (the same, PEM)")
    typer.echo(f"private key  {files.private_key}  (mode 0600; keep it on this gateway)")
    typer.echo(f"thumbprint   {files.thumbprint}")
    typer.echo(f"uri          {uri}  (valid {days} days)")

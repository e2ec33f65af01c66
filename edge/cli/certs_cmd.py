"""`edge certs`: the gateway's certificates. Profiles: `application` (its instance certificate for OPC UA and
other secure protocols), `broker` (a CA and the server certificate of the embedded broker's TLS listeners) and
`client` (a client certificate for a tenant user, signed by that CA)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from edge.bus.tls import broker_cert_dir, write_broker_certificates, write_client_certificate
from edge.cli.common import load_or_exit
from edge.sdk.certs import default_dns_names, write_application_certificate

app = typer.Typer(no_args_is_help=True, help="Create the gateway's certificates.")


class Profile(StrEnum):
    application = "application"
    broker = "broker"
    client = "client"


@app.callback()
def certs() -> None:
    """The gateway's own certificates (a group, so `edge certs create` stays a sub-command)."""


@app.command("create")
def create(
    profile: Profile = typer.Option(
        Profile.application,
        "--profile",
        help="application: instance certificate; broker: CA + TLS server certificate of the embedded broker; "
        "client: a tenant user's client certificate.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Directory to write to (application: required; broker/client: default <data_dir>/certs/broker).",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Gateway configuration (broker/client: finds the data directory)."
    ),
    uri: str | None = typer.Option(
        None,
        "--uri",
        help="Application URI, e.g. urn:acme:edge-gateway:plant-room-1 (put the same in the config).",
    ),
    name: str | None = typer.Option(None, "--name", help="Application name (the certificate's common name)."),
    host: list[str] = typer.Option(
        None,
        "--host",
        help="broker: a host name or address clients use to reach it (repeatable); "
        "default: localhost, this host, 127.0.0.1.",
    ),
    user: str | None = typer.Option(None, "--user", help="client: the tenant user, name@tenant."),
    days: int = typer.Option(365, "--days", min=1, max=7300, help="Validity in days."),
    dns: list[str] = typer.Option(
        None, "--dns", help="DNS name (repeatable); default: localhost and this host."
    ),
    ip: list[str] = typer.Option(None, "--ip", help="IP address (repeatable); default: 127.0.0.1."),
    organization: str | None = typer.Option(None, "--org", help="Organization name in the subject."),
    force: bool = typer.Option(False, "--force", help="Replace an existing certificate and key."),
) -> None:
    """Create a certificate and key (see --profile)."""
    try:
        if profile is Profile.application:
            _application(out, uri, name, days, dns, ip, organization, force)
        elif profile is Profile.broker:
            _broker(_broker_dir(out, config), [*(host or []), *(dns or []), *(ip or [])], days, force)
        else:
            if not user:
                raise typer.BadParameter("the client profile needs --user name@tenant", param_hint="--user")
            cert, key = write_client_certificate(_broker_dir(out, config), user, days=days, overwrite=force)
            typer.echo(f"certificate  {cert}  (common name {user}: logs in as that tenant user)")
            typer.echo(f"private key  {key}  (mode 0600; give both to the client, with the broker's ca.pem)")
    except FileExistsError as exc:
        typer.echo(f"{exc} (use --force to replace it)", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:
        typer.echo(f"cannot create the certificate: {exc}", err=True)
        raise typer.Exit(2) from None


def _broker_dir(out: Path | None, config: Path | None) -> Path:
    if out is not None:
        return out
    loaded, _ = load_or_exit(config or Path("edge.toml"), secrets=False)
    return broker_cert_dir(loaded.data_dir)


def _broker(directory: Path, hosts: list[str], days: int, force: bool) -> None:
    files = write_broker_certificates(directory, hosts, days=days, overwrite=force)
    typer.echo(f"CA           {files.ca}  (give it to every client: it verifies the broker)")
    typer.echo(f"CA key       {files.ca_key}  (mode 0600; signs client certificates; keep it here)")
    typer.echo(f"certificate  {files.server}  (valid {days} days; `edge status` shows when it expires)")
    typer.echo(f"private key  {files.server_key}  (mode 0600)")
    typer.echo("restart the gateway (or `systemctl restart edge-gateway`) for its TLS listeners to use them")


def _application(
    out: Path | None,
    uri: str | None,
    name: str | None,
    days: int,
    dns: list[str] | None,
    ip: list[str] | None,
    organization: str | None,
    force: bool,
) -> None:
    missing = [flag for flag, value in (("--out", out), ("--uri", uri), ("--name", name)) if not value]
    if missing:
        raise typer.BadParameter(f"the application profile needs {', '.join(missing)}")
    assert out is not None and uri is not None and name is not None
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
    typer.echo(f"certificate  {files.certificate}  (DER; give it to the servers' trust lists)")
    typer.echo(f"             {files.certificate_pem}  (the same, PEM)")
    typer.echo(f"private key  {files.private_key}  (mode 0600; keep it on this gateway)")
    typer.echo(f"thumbprint   {files.thumbprint}")
    typer.echo(f"uri          {uri}  (valid {days} days)")

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Run protocol simulators (real servers on loopback).")


@app.command("modbus")
def modbus(
    port: int = typer.Option(5020, help="TCP port on 127.0.0.1."),
    devices: int = typer.Option(10, min=1, max=247, help="Number of inverters (unit ids 1..N)."),
    update_interval: float = typer.Option(1.0, help="Seconds between value updates."),
) -> None:
    """Serve N SunSpec solar inverters over Modbus TCP until Ctrl-C."""
    from simulators.modbus_inverter import main as serve

    typer.echo(
        f"Modbus simulator: {devices} inverters on 127.0.0.1:{port} (unit ids 1..{devices}); Ctrl-C stops"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port=port, devices=devices, update_interval=update_interval))


@app.command("bacnet")
def bacnet(
    vav: int = typer.Option(2, min=0, help="VAV boxes besides the air-handling unit."),
    address: str = typer.Option("127.0.0.2", help="Address of the first device."),
    port: int = typer.Option(47808, help="UDP port."),
    layout: str = typer.Option("ips", help="'ips': one loopback address per device; 'ports': one port each."),
    instance: int = typer.Option(1000, help="Device instance of the AHU (VAVs follow)."),
) -> None:
    """Serve an air-handling unit and VAV boxes over BACnet/IP until Ctrl-C (see simulators/README.md)."""
    from simulators.bacnet_hvac import main as serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(vav=vav, address=address, port=port, layout=layout, instance=instance))


@app.command("opcua")
def opcua(
    port: int = typer.Option(4840, help="TCP port on 127.0.0.1."),
    lifts: int = typer.Option(4, min=1, max=200, help="Number of lifts (Lift1..LiftN)."),
    floors: int = typer.Option(10, min=2, max=200, help="Floors served."),
    security: list[str] = typer.Option(
        ["None"],
        help="Policy to offer, repeatable: None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss.",
    ),
    pki_dir: Path | None = typer.Option(None, help="Keep the server certificate here across runs."),
    trusted_clients: Path | None = typer.Option(
        None, help="Directory of trusted client certificates (default: any)."
    ),
) -> None:
    """Serve N lift controllers over OPC UA until Ctrl-C."""
    from simulators.opcua_lift import main as serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                port,
                lifts,
                floors=floors,
                security=security,
                pki_dir=pki_dir,
                trusted_clients=trusted_clients,
            )
        )


@app.command("cloud")
def cloud(
    port: int = typer.Option(8443, help="TCP port on 127.0.0.1."),
    tenants: str = typer.Option("acme", help="Comma-separated tenant ids; demo credentials are printed."),
    token_ttl: float = typer.Option(300.0, help="Seconds an access token lives."),
) -> None:
    """A cloud ingestion endpoint (OAuth2, HMAC, dedupe, fault injection) until Ctrl-C."""
    from simulators.cloud import main as serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port=port, tenants=[t for t in tenants.split(",") if t], token_ttl=token_ttl))


oidc_app = typer.Typer(help="A test OpenID Connect issuer for the API (tokens with tenant and role claims).")
app.add_typer(oidc_app, name="oidc")


@oidc_app.callback(invoke_without_command=True)
def oidc(
    ctx: typer.Context,
    port: int = typer.Option(9400, help="TCP port on 127.0.0.1."),
    tenants: str = typer.Option(
        "acme,globex", help="Comma-separated tenants; clients <tenant>-<role> exist."
    ),
    audience: str = typer.Option("edge-gateway", help="The `aud` of issued tokens."),
    token_ttl: float = typer.Option(300.0, help="Seconds an access token lives."),
) -> None:
    """Serve discovery, a rotating JWKS and a client-credentials token endpoint until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from simulators.oidc import main as serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port, tuple(t for t in tenants.split(",") if t), audience, token_ttl))


@oidc_app.command("token")
def oidc_token(
    tenant: str | None = typer.Option(
        None, help="Tenant of the token (omit with --role admin: every tenant)."
    ),
    role: str = typer.Option("viewer", help="viewer, operator or admin."),
    issuer: str = typer.Option("http://127.0.0.1:9400", help="URL of a running `edge simulate oidc`."),
) -> None:
    """Print an access token from a running test issuer (client credentials), for curl's Authorization header."""
    import httpx

    client = f"{tenant}-{role}" if tenant else role
    try:
        response = httpx.post(
            f"{issuer.rstrip('/')}/token",
            data={"grant_type": "client_credentials"},
            auth=(client, f"{client}-secret"),
            timeout=10.0,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the issuer at {issuer}: {exc}", err=True)
        raise typer.Exit(2) from None
    if response.status_code != 200:
        typer.echo(f"the issuer refused client {client!r}: {response.status_code} {response.text}", err=True)
        raise typer.Exit(1)
    typer.echo(response.json()["access_token"])

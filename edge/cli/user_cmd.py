"""`edge user add|remove|passwd|list`: the console's local accounts (edge.api.accounts), for a gateway without
an OIDC issuer. Passwords are prompted (twice, hidden) or read from standard input with `--password-stdin`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge.cli.common import load_or_exit
from edge.cli.output import JSON_OPTION, Column, emit

if TYPE_CHECKING:
    from edge.api.accounts import AccountStore

app = typer.Typer(no_args_is_help=True, help="Local console accounts (when no OIDC issuer is configured).")
CONFIG = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")
STDIN = typer.Option(False, "--password-stdin", help="Read the password from standard input (one line).")


def _store(config: Path) -> tuple[AccountStore, set[str]]:
    from edge.api.accounts import AccountStore, accounts_path  # the API's modules load only when needed

    loaded, _ = load_or_exit(config, secrets=False)
    return AccountStore(accounts_path(loaded.data_dir)), {t.id for t in loaded.config.tenants}


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(str(exc), err=True)
    return typer.Exit(1)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Account name (what the user types to sign in)."),
    role: str = typer.Option("viewer", help="viewer, operator (may write points) or admin (every tenant)."),
    tenant: str = typer.Option(None, help="The tenant the account sees (admins may have none)."),
    password_stdin: bool = STDIN,
    config: Path = CONFIG,
) -> None:
    """Add an account with its role and tenant; the password is hashed with Argon2id."""
    store, tenants = _store(config)
    if tenant is not None and tenant not in tenants:
        raise _fail(ValueError(f"no tenant {tenant!r} in {config} (tenants: {', '.join(sorted(tenants))})"))
    try:
        store.add(name, _password(password_stdin), role, tenant)
    except ValueError as exc:  # AccountError
        raise _fail(exc) from None
    typer.echo(f"added {role} account {name!r}" + (f" of tenant {tenant!r}" if tenant else ""))


@app.command("remove")
def remove(name: str = typer.Argument(..., help="Account name."), config: Path = CONFIG) -> None:
    """Remove an account; its open console sessions end with their next request."""
    store, _ = _store(config)
    try:
        store.remove(name)
    except ValueError as exc:  # AccountError
        raise _fail(exc) from None
    typer.echo(f"removed account {name!r}")


@app.command("passwd")
def passwd(
    name: str = typer.Argument(..., help="Account name."), password_stdin: bool = STDIN, config: Path = CONFIG
) -> None:
    """Set a new password for an account."""
    store, _ = _store(config)
    try:
        store.set_password(name, _password(password_stdin))
    except ValueError as exc:  # AccountError
        raise _fail(exc) from None
    typer.echo(f"changed the password of {name!r}")


@app.command("list")
def list_accounts(config: Path = CONFIG, as_json: bool = JSON_OPTION) -> None:
    """Every account with its role and tenant (never a hash)."""
    store, _ = _store(config)
    rows = [{"name": a.name, "role": a.role, "tenant": a.tenant} for a in store.accounts()]
    emit(
        rows, [Column("name", "account"), Column("role", "role"), Column("tenant", "tenant")], as_json=as_json
    )

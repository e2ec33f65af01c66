"""The gateway's release, SemVer (CHANGELOG.md): the installed package's version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

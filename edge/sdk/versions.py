"""Versioned event data for module authors: adaptors between minor versions of a type you produce, and
deprecations with their two-minor-release window.

Every event carries `dataversion` (MAJOR.MINOR). Register an adaptor for each minor step of a type your module
produces (`@ADAPTORS.adaptor(type, from_version, to_version)`), so a module that handles an older minor still
gets your newer events; the kernel's version gate (edge.module_host.versions) walks them. Adaptors never cross
a MAJOR version. `deprecate_event_version` and `deprecated_api` refuse a removal less than two minor releases
after the deprecation.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from packaging.specifiers import SpecifierSet
from packaging.version import Version

__all__ = [
    "ADAPTORS",
    "DEPRECATED_API",
    "Adaptor",
    "AdaptorRegistry",
    "Deprecation",
    "deprecate_event_version",
    "deprecated_api",
    "deprecation_of",
]

log = logging.getLogger(__name__)

Adaptor = Callable[[dict[str, Any]], dict[str, Any]]
P = ParamSpec("P")
R = TypeVar("R")


def _major_minor(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a MAJOR.MINOR version") from None


class AdaptorRegistry:
    """Transformation adaptors by (event type, from-version, to-version)."""

    def __init__(self) -> None:
        self._steps: dict[str, dict[str, dict[str, Adaptor]]] = {}

    def register(self, type: str, from_version: str, to_version: str, adaptor: Adaptor) -> None:
        source, target = _major_minor(from_version), _major_minor(to_version)
        if source[0] != target[0]:
            raise ValueError(
                f"{type}: adaptors stay within one MAJOR version ({from_version} -> {to_version})"
            )
        steps = self._steps.setdefault(type, {}).setdefault(f"{source[0]}.{source[1]}", {})
        key = f"{target[0]}.{target[1]}"
        if key in steps:
            raise ValueError(f"{type}: an adaptor {from_version} -> {to_version} is already registered")
        steps[key] = adaptor

    def adaptor(self, type: str, from_version: str, to_version: str) -> Callable[[Adaptor], Adaptor]:
        """Decorator form of `register`."""

        def add(function: Adaptor) -> Adaptor:
            self.register(type, from_version, to_version, function)
            return function

        return add

    def path(self, type: str, version: str, accepts: SpecifierSet) -> list[tuple[str, Adaptor]] | None:
        """The shortest chain of adaptors from `version` to one `accepts` admits ([] when it already does)."""
        if accepts.contains(Version(version)):
            return []
        graph = self._steps.get(type, {})
        seen, queue = {version}, deque([(version, list[tuple[str, Adaptor]]())])
        while queue:
            current, chain = queue.popleft()
            for target, step in graph.get(current, {}).items():
                if target in seen:
                    continue
                route = [*chain, (target, step)]
                if accepts.contains(Version(target)):
                    return route
                seen.add(target)
                queue.append((target, route))
        return None


ADAPTORS = AdaptorRegistry()  # the kernel's registry; a module registers adaptors of the types it produces


@dataclass(frozen=True)
class Deprecation:
    what: str
    since: str  # the kernel API release that deprecated it
    removed_in: str  # the first release without it


_DEPRECATED_EVENTS: dict[tuple[str, str], Deprecation] = {}
DEPRECATED_API: dict[str, Deprecation] = {}


def _check_window(what: str, since: str, removed_in: str) -> Deprecation:
    s, r = _major_minor(since), _major_minor(removed_in)
    if r[0] == s[0] and r[1] < s[1] + 2:
        raise ValueError(f"{what}: deprecated in {since}, so removable in {s[0]}.{s[1] + 2} at the earliest")
    return Deprecation(what, since, removed_in)


def deprecate_event_version(type: str, version: str, since: str, removed_in: str) -> None:
    """Mark a data version deprecated: modules receiving it get a warning until it is removed."""
    _DEPRECATED_EVENTS[(type, version)] = _check_window(f"{type} {version}", since, removed_in)


def deprecated_api(since: str, removed_in: str, instead: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function of the module API deprecated; each call warns (DeprecationWarning), logged once."""

    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        notice = _check_window(function.__qualname__, since, removed_in)
        DEPRECATED_API[function.__qualname__] = notice
        message = (
            f"{function.__qualname__} is deprecated since kernel API {since} and goes in {removed_in}; "
            f"use {instead}"
        )
        logged = False

        @functools.wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            nonlocal logged
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            if not logged:
                log.warning("%s", message)
                logged = True
            return function(*args, **kwargs)

        return call

    return wrap


def deprecation_of(type: str, version: str) -> Deprecation | None:
    """The deprecation notice of one data version of a type, if it was deprecated."""
    return _DEPRECATED_EVENTS.get((type, version))

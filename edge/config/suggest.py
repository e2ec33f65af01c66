"""Names the user may have meant: a misspelled profile, configuration key, point or device.

Every "no such X" message lists what exists, the closest spellings first, so a typo is fixed at a glance.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["closest_first", "did_you_mean", "known_keys", "listing", "unknown_key"]

_CUTOFF = 0.6  # difflib's default: 'pol_interval' finds 'poll_interval', 'timeout' does not find 'port'


def closest_first(word: str, known: Iterable[str]) -> list[str]:
    """Every name of `known` once: those that look like `word` first (closest first, equally close ones in
    their order), then the rest in order."""
    names = list(dict.fromkeys(known))
    score = {n: difflib.SequenceMatcher(None, n, word).ratio() for n in names}
    close = sorted((n for n in names if score[n] >= _CUTOFF), key=lambda n: -score[n])  # stable: keeps order
    return close + [n for n in names if score[n] < _CUTOFF]


def did_you_mean(word: str, known: Iterable[str]) -> str | None:
    """The one name of `known` closest to `word`, if any is close enough to be a typo of it."""
    names = closest_first(word, known)
    if names and difflib.SequenceMatcher(None, names[0], word).ratio() >= _CUTOFF:
        return names[0]
    return None


def listing(word: str, known: Iterable[str], limit: int = 15) -> str:
    """'a, b, c' (closest to `word` first), at most `limit` names then how many there are; 'none' if empty."""
    names = closest_first(word, known)
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def unknown_key(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    """The reason for an unknown key at `loc` (pydantic's "extra_forbidden" error) inside `model`: the
    closest key of that table, or the keys it has."""
    key = str(loc[-1])
    known = known_keys(model, loc[:-1])
    if not known:
        return f"unknown key {key!r}"
    best = did_you_mean(key, known)
    if best is not None:
        return f"unknown key {key!r}: did you mean {best!r}?"
    return f"unknown key {key!r} (keys here: {listing(key, known)})"


def known_keys(model: type[BaseModel], path: Sequence[int | str]) -> list[str]:
    """The keys the table at `path` (a pydantic error location) inside `model` may have; [] if not a model."""
    annotation: Any = model
    for part in path:
        annotation = _model_or_container(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {f.alias or name: f for name, f in annotation.model_fields.items()}
            if not isinstance(part, str) or part not in fields:
                return []
            annotation = fields[part].annotation
        elif get_origin(annotation) in (list, tuple, dict) and get_args(annotation):
            annotation = get_args(annotation)[-1 if get_origin(annotation) is dict else 0]
        else:
            return []
    annotation = _model_or_container(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or name for name, f in annotation.model_fields.items()]
    return []


def _model_or_container(annotation: Any) -> Any:
    """`X`, `Annotated[X, ...]` or `X | None` -> X (the one non-None member of an optional)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation

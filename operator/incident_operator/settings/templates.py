"""A small, safe template language for notification messages and `httpCheck` URLs. Pure.

`{name}` is replaced by a field of the incident (see `FIELDS`); `{{` and `}}` are literal braces.
Nothing else is evaluated: no attribute access, no expressions, no code. Unknown fields are an
error found when the Playbook is validated, not when the notification is sent.
"""

from __future__ import annotations

import re

FIELDS = (
    "name",
    "namespace",
    "title",
    "description",
    "severity",
    "category",
    "phase",
    "commander",
    "step",
    "url",
    "event",  # channel templates: opened, phase, stepFailed, breached, resolved
    "notice",  # channel templates: the operator's own one-line text of the notice
)

URL_FIELDS = ("targetName", "targetKind", "namespace")
"""The fields of an `httpCheck` URL: the workload checked (its target's name and kind, rendered
once per target) and the incident's namespace."""
TARGET_FIELDS = frozenset({"targetName", "targetKind"})
"""URL fields that need the step to have a `target`."""

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")


class TemplateError(ValueError):
    """The template uses an unknown field or an unbalanced brace."""


def check(template: str, known: tuple[str, ...] = FIELDS) -> None:
    for match in _TOKEN.finditer(template):
        token, field = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            continue
        if field is None:
            raise TemplateError(
                f"unbalanced {token!r} at position {match.start()}; write {token * 2} for a literal"
            )
        if field not in known:
            raise TemplateError(f"unknown field {{{field}}}; known fields: {', '.join(known)}")


def fields(template: str, known: tuple[str, ...] = FIELDS) -> set[str]:
    """The fields a (valid) template uses."""
    check(template, known)
    return {m.group(1) for m in _TOKEN.finditer(template) if m.group(1)}


def render(template: str, values: dict[str, str], known: tuple[str, ...] = FIELDS) -> str:
    check(template, known)

    def substitute(match: re.Match[str]) -> str:
        token, field = match.group(0), match.group(1)
        if field:
            return values.get(field, "")
        return token[0]  # "{{" -> "{", "}}" -> "}"; check() rejected lone braces

    return _TOKEN.sub(substitute, template)

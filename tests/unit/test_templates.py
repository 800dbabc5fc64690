"""Notification templates: fields substituted, nothing evaluated, mistakes caught early."""

from __future__ import annotations

import pytest

from incident_operator.settings.templates import TemplateError, check, render


def test_fields_are_substituted_and_braces_escaped() -> None:
    out = render(
        "[{severity}] {title} is {phase} {{json}}",
        {"severity": "P1", "title": "web down", "phase": "Mitigating"},
    )
    assert out == "[P1] web down is Mitigating {json}"


def test_a_missing_value_renders_empty() -> None:
    assert render("commander: {commander}.", {}) == "commander: ."


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{title.__class__}", "unbalanced"),
        ("{secret}", "unknown field {secret}"),
        ("{title", "unbalanced '{'"),
        ("oops }", "unbalanced '}'"),
        ("{0}", "unbalanced"),
    ],
)
def test_bad_templates_are_rejected(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        check(template)

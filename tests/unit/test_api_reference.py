"""docs/reference/api.md is generated from the models, the reasons and the keys, and must not drift."""

from __future__ import annotations

from pathlib import Path

from incident_operator.api import crdgen, reference
from incident_operator.api.keys import KEYS
from incident_operator.api.models import ACTIONS
from incident_operator.api.reasons import ConditionType, Reason

API_MD = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api.md"


def test_committed_api_reference_matches_the_models() -> None:
    assert API_MD.exists(), f"{API_MD} is missing: run `make docs`"
    assert API_MD.read_text() == reference.render(), f"{API_MD} drifted from the models: run `make docs`"


def test_every_kind_field_action_reason_and_key_is_in_the_reference() -> None:
    text = reference.render()
    for kind in crdgen.KINDS:
        assert f"## {kind.kind}\n" in text
        for part in ("spec", "status"):
            for name in crdgen.model_schema(getattr(kind, f"{part}_model"))["properties"]:
                assert f"| `.{part}.{name}` |" in text, (kind.kind, part, name)
    for action in ACTIONS:
        assert f"| `.spec.steps[].{action}` |" in text, action
    for value in (*ConditionType, *Reason):
        assert f"| `{value}` |" in text, value
    for key, _, _ in KEYS:
        assert f"| `{key}` |" in text, key


def test_fields_walks_lists_and_maps_and_says_what_is_required() -> None:
    schema = {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "maxItems": 3,
                "items": {"type": "object", "properties": {"name": {"type": "string", "enum": ["a", "b"]}}},
            },
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "count": {"type": "integer", "default": 2, "minimum": 0, "description": "How  many."},
        },
    }
    rows = {row.path: row for row in reference.fields(schema, ".spec")}
    assert list(rows) == [".spec.items", ".spec.items[].name", ".spec.labels", ".spec.count"]
    assert rows[".spec.items"].required
    assert rows[".spec.items"].type == "[]object"
    assert rows[".spec.items"].limits == ("items <= 3",)
    assert rows[".spec.items[].name"].enum == ("a", "b")
    assert rows[".spec.labels"].type == "map[string]string"
    assert (rows[".spec.count"].default, rows[".spec.count"].description) == (2, "How many.")


def test_main_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "ref" / "api.md"
    assert reference.main([str(target)]) == 0
    assert target.read_text() == reference.render()

"""Write the `config` part of the Helm chart's values.schema.json from the operator's config model.

`values.config` is the operator's --config file; its JSON Schema comes from the pydantic model that
parses that file (`FileConfig`), so `helm install` refuses a wrong config value (an unknown key, a
wrong type, an out-of-range number) before any pod starts. The rest of values.schema.json is written
by hand; this keeps its hand-written `$defs` (lower-case names) and replaces the generated ones
(the models' names) and `properties.config`. `make chart-files` runs it; tests/unit/test_chart_schema.py
fails when the committed file differs from what this writes.

    python hack/chart_schema.py [charts/incident-operator/values.schema.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from incident_operator.settings.config import FileConfig

SCHEMA = Path(__file__).resolve().parents[1] / "charts" / "incident-operator" / "values.schema.json"


def _without_titles(node: Any, *, in_properties: bool = False) -> Any:
    """Drop pydantic's generated `title`s (noise in Helm's messages); a property named title stays."""
    if isinstance(node, dict):
        return {
            k: _without_titles(v, in_properties=(k == "properties" and not in_properties))
            for k, v in node.items()
            if in_properties or not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_without_titles(v) for v in node]
    return node


def config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the schema of values.config, the definitions it refers to as #/$defs/NAME)."""
    schema = _without_titles(FileConfig.model_json_schema(ref_template="#/$defs/{model}"))
    definitions = schema.pop("$defs", {})
    schema["description"] = "the operator's config file (docs/reference/config.md), as the operator parses it"
    return schema, definitions


def rendered(current: dict[str, Any]) -> dict[str, Any]:
    schema, generated = config_schema()
    hand_written = {k: v for k, v in current.get("$defs", {}).items() if k[:1].islower()}
    clash = [k for k in generated if k[:1].islower()]
    if clash:
        raise SystemExit(f"generated definitions must start upper-case (hand-written ones do not): {clash}")
    result = dict(current)
    result["$defs"] = {**hand_written, **dict(sorted(generated.items()))}
    result["properties"] = {**current["properties"], "config": schema}
    return result


def text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else SCHEMA
    path.write_text(text(rendered(json.loads(path.read_text()))))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

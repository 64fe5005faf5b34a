"""Generates the `config` part of helm/bridge/values.schema.json from the settings model, so
`helm install` refuses what `bridge check` refuses: unknown keys (`chanels:`), wrong types and
enums, and secrets written in plain text.

    python helm/chart_schema.py           # rewrite values.schema.json (`make chart-schema`)
    python helm/chart_schema.py --check   # exit 1 when it is out of date (the chart tests)

Only `properties.config` and the `definitions` named `config.*` are generated; everything
else in values.schema.json (the chart's own values) is written by hand and kept as it is.

From `bridge.settings.Settings.model_json_schema()`, changed where the file differs from the
model:
- `metrics` is left out: the chart sets it from `metrics.port`.
- every secret key (`bridge.settings.secret_keys()`) may only be an `${ENV}` reference, and has
  its `<key>_file` variant (a file next to bridge.yaml: a key of the mounted Secret); a
  required secret needs one of the two, never both.
- any other scalar may be an `${ENV}` reference as well (interpolated before validation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.settings import Settings, secret_keys  # noqa: E402

SCHEMA = ROOT / "helm" / "bridge" / "values.schema.json"
PREFIX = "config."
ENV_ONLY = r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$"  # `${NAME}`: no default, which would be plain text
HAS_ENV = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"
CHART_OWNED = ("metrics",)
SCALARS = {"string", "number", "integer", "boolean", "null"}


def config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the schema of `config`, the definitions it refers to, named `config.*`)."""
    model = Settings.model_json_schema(ref_template="#/definitions/" + PREFIX + "{model}")
    definitions = {PREFIX + name: _object(d) for name, d in model.pop("$defs").items()}
    definitions[PREFIX + "EnvReference"] = {
        "type": "string",
        "pattern": HAS_ENV,
        "description": "interpolated from the pod's environment (`env`, `envFrom`)",
    }
    for name in CHART_OWNED:
        model["properties"].pop(name)
        definitions.pop(PREFIX + name.capitalize() + "Settings", None)
    config = _object(model)
    config.pop("title", None)
    config["description"] = (
        "bridge.yaml (README 'Configuration') without `metrics`, which the chart sets from "
        "metrics.port. Secrets only as <key>_file (a key of a mounted Secret) or ${ENV}. "
        "Generated from bridge.settings by `make chart-schema`: do not edit."
    )
    return config, definitions


def _object(schema: dict[str, Any]) -> dict[str, Any]:
    schema = _strip(schema)
    properties: dict[str, Any] = schema.get("properties", {})
    required: list[str] = schema.get("required", [])
    for key in list(properties):
        if key in secret_keys():
            properties[key] = {
                "type": "string",
                "pattern": ENV_ONLY,
                "description": f"only as an ${{ENV}} reference; or {key}_file",
            }
            properties[key + "_file"] = {
                "type": "string",
                "minLength": 1,
                "description": f"file holding {key}, relative to bridge.yaml (a Secret's key)",
            }
            schema.setdefault("not", {"anyOf": []})["anyOf"].append(
                {"required": [key, key + "_file"]}
            )
            if key in required:
                required.remove(key)
                schema.setdefault("allOf", []).append(
                    {"anyOf": [{"required": [key]}, {"required": [key + "_file"]}]}
                )
        elif _scalar(properties[key]) and "const" not in properties[key]:
            properties[key] = {"anyOf": [properties[key], {"$ref": _ref("EnvReference")}]}
    if not required:
        schema.pop("required", None)
    return schema


def _ref(name: str) -> str:
    return "#/definitions/" + PREFIX + name


def _scalar(schema: dict[str, Any]) -> bool:
    if "anyOf" in schema:
        return all(_scalar(s) for s in schema["anyOf"])
    return schema.get("type") in SCALARS or "enum" in schema or "const" in schema


def _strip(node: Any) -> Any:
    """Without pydantic's generated titles (noise in helm's messages), and a discriminated
    union (`oneOf` + OpenAPI's `discriminator`) as `if venue is X then X's schema`: helm then
    reports only the errors of the stream's own venue, not those of every other one."""
    if isinstance(node, dict) and "discriminator" in node:
        tag, mapping = node["discriminator"]["propertyName"], node["discriminator"]["mapping"]
        return {
            "type": "object",
            "required": [tag],
            "properties": {tag: {"enum": sorted(mapping)}},
            "allOf": [
                {"if": {"properties": {tag: {"const": value}}}, "then": {"$ref": ref}}
                for value, ref in sorted(mapping.items())
            ],
        }
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "title" or isinstance(v, dict)}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def render(current: dict[str, Any]) -> str:
    config, definitions = config_schema()
    values = dict(current)
    values["properties"] = {**current["properties"], "config": config}
    kept = {k: v for k, v in current.get("definitions", {}).items() if not k.startswith(PREFIX)}
    values["definitions"] = {**kept, **dict(sorted(definitions.items()))}
    return json.dumps(values, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    text = SCHEMA.read_text(encoding="utf-8")
    wanted = render(json.loads(text))
    if args.check:
        if text != wanted:
            name = SCHEMA.relative_to(ROOT)
            print(
                f"{name} does not match bridge.settings: run `make chart-schema`", file=sys.stderr
            )
            return 1
        return 0
    if text != wanted:
        SCHEMA.write_text(wanted, encoding="utf-8")
        print(f"{SCHEMA.relative_to(ROOT)}: regenerated from bridge.settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())

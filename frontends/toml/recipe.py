"""Read a TOML recipe (``spec/recipe.md``) into the shared recipe model.

    recipe = read_recipe(text, "irctl.toml")   # -> frontends.common.model.Recipe

The text is parsed with the standard library's ``tomllib``, checked against the JSON Schema
``spec/recipe.schema.json`` (one definition: the file here is a link to it), then turned into
:class:`~frontends.common.model.Recipe` values that remember the line and key path of every step
and mount.  Every error names both::

    recipe.toml:14: stages.app.steps[3].mounts[0].type: unknown mount type "cahce" (did you mean "cache"?)
"""

from __future__ import annotations

import json
import re
import tomllib
from functools import lru_cache
from pathlib import Path

import jsonschema

from frontends.common.lower import RecipeError
from frontends.errors import quoted_hint
from frontends.common.model import MountDecl, Recipe, StageDecl, Step, Where
from frontends.toml.lines import format_path, key_lines, line_of

# A step's kind is its run/copy/add key (whose options may share names with other kinds: env,
# workdir, user), else the one kind key it has.
PRIMARY = ("run", "copy", "add")
KINDS = PRIMARY + ("env", "label", "workdir", "user", "expose", "volume", "entrypoint", "cmd", "healthcheck",
                   "stopsignal", "shell", "arg", "onbuild", "maintainer")
CONFIG_ORDER = (("shell", "shell"), ("env", "env"), ("labels", "label"), ("user", "user"), ("workdir", "workdir"),
                ("expose", "expose"), ("volumes", "volume"), ("stopsignal", "stopsignal"),
                ("healthcheck", "healthcheck"), ("entrypoint", "entrypoint"), ("cmd", "cmd"))
_NOUNS = {"network": "network mode", "security": "security mode"}
_TYPE_NAMES = {"string": "a string", "array": "an array", "object": "a table", "integer": "an integer",
               "boolean": "a boolean", "number": "a number", "null": "nothing"}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads((Path(__file__).parent / "recipe.schema.json").read_text())


@lru_cache(maxsize=1)
def _validators() -> tuple:
    """The document validator (steps checked only as tables) and one validator per step kind."""
    full = schema()
    shallow = json.loads(json.dumps(full))
    shallow["$defs"]["step"] = {"type": "object"}
    cls = jsonschema.Draft202012Validator
    per_kind = {k: cls({"$ref": f"#/$defs/{k}_step", "$defs": full["$defs"]}) for k in KINDS}
    return cls(shallow), per_kind


class _Reader:
    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.lines = key_lines(text)

    def where(self, path: tuple) -> Where:
        return Where(self.filename, line_of(self.lines, path), format_path(path))

    def fail(self, message: str, path: tuple) -> RecipeError:
        return RecipeError(message, self.where(path))

    # -- schema errors as sentences -------------------------------------------------------
    def check(self, validator, instance, base: tuple) -> None:
        errors = list(validator.iter_errors(instance))
        if not errors:
            return
        best = min(errors, key=lambda e: (line_of(self.lines, base + tuple(e.absolute_path)),
                                          -len(e.absolute_path), e.validator != "additionalProperties"))
        raise self.explain(best, base)

    def explain(self, e: jsonschema.ValidationError, base: tuple) -> RecipeError:
        path = base + tuple(e.absolute_path)
        v = e.validator
        if v == "additionalProperties":
            allowed = list(e.schema.get("properties", {}))
            extra = [k for k in e.instance if k not in allowed]
            key = extra[0]
            return self.fail(f'unknown key "{key}"' + quoted_hint(key, allowed), path + (key,))
        if v == "required":
            missing = [k for k in e.validator_value if k not in e.instance]
            return self.fail(f'missing key "{missing[0]}"', path)
        if v == "enum":
            key = path[-1] if path and isinstance(path[-1], str) else "value"
            noun = _NOUNS.get(key, key)
            if len(path) >= 3 and path[-3] == "mounts":
                noun = "mount " + key
            return self.fail(f'unknown {noun} "{e.instance}"' + quoted_hint(str(e.instance), e.validator_value), path)
        if v == "type":
            want = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
            return self.fail(f"expected {' or '.join(_TYPE_NAMES[t] for t in want)}, got {_toml_type(e.instance)}", path)
        if v == "const":
            return self.fail(f"unsupported value {json.dumps(e.instance)}: expected {json.dumps(e.validator_value)}", path)
        if "propertyNames" in e.schema_path:
            return self.fail(f'invalid name "{e.instance}"', path + (e.instance,))
        if v == "pattern":
            return self.fail(f'invalid value "{e.instance}"', path)
        if v in ("minItems", "minProperties", "minLength"):
            return self.fail("must not be empty", path)
        return self.fail(e.message, path)

    # -- the document ---------------------------------------------------------------------
    def read(self) -> Recipe:
        try:
            doc = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
            msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
            line = int(m.group(1)) if m else 1
            raise RecipeError(f"invalid TOML: {msg}", Where(self.filename, line)) from None
        whole, per_kind = _validators()
        self.check(whole, doc, ())
        args = tuple((name, None if value is False else _text(value), self.where(("args", name)))
                     for name, value in doc.get("args", {}).items())
        stages = []
        for name, table in doc["stages"].items():
            base = ("stages", name)
            steps = [self.step(per_kind, raw, base + ("steps", n)) for n, raw in enumerate(table.get("steps", ()))]
            steps += self.config(table.get("config", {}), base + ("config",))
            stages.append(StageDecl(name, table["from"], tuple(steps), self.where(base), table.get("platform", ""),
                                    base_where=self.where(base + ("from",)),
                                    platform_where=self.where(base + ("platform",))))
        targets = {t: (stage, self.where(("targets", t))) for t, stage in doc.get("targets", {}).items()}
        return Recipe(tuple(stages), args, targets, language="toml", expand=True)

    def step(self, per_kind: dict, raw: dict, path: tuple) -> Step:
        kind = self.kind_of(raw, path)
        self.check(per_kind[kind], raw, path)
        return self.convert(kind, raw, path)

    def kind_of(self, raw: dict, path: tuple) -> str:
        for k in PRIMARY:
            if k in raw:
                return k
        kinds = [k for k in raw if k in KINDS]
        if len(kinds) == 1:
            return kinds[0]
        if len(kinds) > 1:
            found = " and ".join(f'"{k}"' for k in kinds[:2])
            raise self.fail(f"a step does one thing; this one has {found} (split it in two)", path)
        unknown = next(iter(raw), "")
        hint = quoted_hint(unknown, KINDS) if unknown else ""
        raise self.fail(f'unknown step "{unknown}"{hint}' if unknown else "empty step", path)

    def convert(self, kind: str, raw: dict, path: tuple) -> Step:
        where = self.where(path)
        if kind == "run":
            mounts = tuple(MountDecl(m["type"], tuple((k, v) for k, v in m.items() if k != "type"),
                                 self.where(path + ("mounts", n)),
                                 {k: self.lines[path + ("mounts", n, k)] for k in m
                                  if path + ("mounts", n, k) in self.lines})
                           for n, m in enumerate(raw.get("mounts", ())))
            fields = {"cmd": raw["run"], "env": [(k, _text(v)) for k, v in raw.get("env", {}).items()],
                      "workdir": raw.get("workdir"), "user": raw.get("user"), "network": raw.get("network"),
                      "security": raw.get("security"), "mounts": mounts}
        elif kind in ("copy", "add"):
            src = raw[kind]
            fields = {k: v for k, v in raw.items() if k not in (kind, "inline")}
            fields["src"] = [src] if isinstance(src, str) else list(src)
            fields["inline"] = list(raw.get("inline", {}).items())
            if not fields["src"] and not fields["inline"]:
                raise self.fail(f"{kind} needs a source (or inline files)", path + (kind,))
        elif kind in ("env", "label"):
            fields = {"pairs": [(k, _text(v)) for k, v in raw[kind].items()]}
        elif kind in ("workdir", "user", "stopsignal", "onbuild", "maintainer"):
            fields = {"value": raw[kind]}
        elif kind == "expose":
            ports = raw["expose"] if isinstance(raw["expose"], list) else [raw["expose"]]
            fields = {"ports": [str(p) for p in ports]}
        elif kind == "volume":
            fields = {"paths": [raw["volume"]] if isinstance(raw["volume"], str) else list(raw["volume"])}
        elif kind in ("cmd", "entrypoint"):
            fields = {"cmd": raw[kind]}
        elif kind == "shell":
            fields = {"argv": list(raw["shell"])}
        elif kind == "healthcheck":
            test = raw["healthcheck"]
            if test is True:
                raise self.fail("healthcheck = true means nothing: give a command, or false to disable", path + ("healthcheck",))
            fields = {"cmd": None if test is False else test}
            for k in ("interval", "timeout", "start_period", "start_interval"):
                if k in raw:
                    fields[k] = self.seconds(raw[k], path + (k,))
            if "retries" in raw:
                fields["retries"] = raw["retries"]
        else:  # arg
            fields = {"name": raw["arg"], "default": _text(raw["default"]) if "default" in raw else None}
        lines = {k: self.lines[path + (k,)] for k in raw if path + (k,) in self.lines}
        return Step(kind, fields, where, lines=lines)

    def config(self, table: dict, path: tuple) -> list[Step]:
        steps = []
        for key, kind in CONFIG_ORDER:
            if key not in table:
                continue
            value = table[key]
            raw = dict(value) if key == "healthcheck" else {kind: value}
            steps.append(self.convert(kind, raw, path + (key,)))
        return steps

    def seconds(self, value, path: tuple) -> float:
        if isinstance(value, (int, float)):
            if value < 0:
                raise self.fail("a duration cannot be negative", path)
            return float(value)
        return sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(value))


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _toml_type(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def read_recipe(text: str, filename: str = "irctl.toml") -> Recipe:
    """The recipe in ``text``; raises :class:`~frontends.common.lower.RecipeError` with line and key path."""
    return _Reader(text, filename).read()

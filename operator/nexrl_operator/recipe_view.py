"""What the operator can see of a recipe before the runtime loads it: its own overrides and
spec.overrides applied to spec.config (or, for a recipe in the image, to nothing) as Hydra would
apply them, without Hydra; and which config keys the operator sets itself (users may not).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nexrl_runtime.config.schema import NexRLConfig

from .api import NexRLJobSpec
from .field_error import FieldError

RESERVED_OVERRIDE_KEYS = ("mode", "launch_mode", "cluster")
"""Config keys the operator owns: set them through the spec, not through overrides."""
_OWNED = {"mode": "from spec.mode", "launch_mode": "to ray (the job runs on its Ray cluster)",
          "cluster": "from the spec (the job's cluster.yaml)"}
_OVERRIDE = re.compile(r"^(?P<op>~|\+\+|\+)?(?P<key>[A-Za-z_][\w\-]*(?:\.[\w\-]+)*)(?:=(?P<value>.*))?$")
_SIMPLE_VALUE = re.compile(r"^[^\[\]{}(),$'\"\\*?]*$|^'[^']*'$|^\"[^\"]*\"$")
"""Override values read like YAML scalars here; anything else (lists, sweeps, functions,
interpolations) only Hydra reads, and the field it sets is left to the runtime's check."""
_INT = re.compile(r"^[+-]?\d[\d_]*$")
_FLOAT = re.compile(r"^[+-]?((\d[\d_]*)?\.\d+|\d[\d_]*\.?\d*)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.I)


def operator_keys(spec: NexRLJobSpec, name: str) -> dict[str, str]:
    """Config key -> how the operator sets it (in words): the reserved keys and the keys of its
    overrides (builders.commands.operator_settings)."""
    from .builders.commands import operator_settings  # builders -> spec_checks -> here

    return {**_OWNED, **{key: why for key, (_, why) in operator_settings(spec, name).items()}}


def owner_of(key: str, owned: Mapping[str, str]) -> str | None:
    """The operator's key that `key` (dotted) sets, is inside of, or holds (`inference` holds
    `inference.engine`); None when the operator leaves it to the recipe."""
    return next((k for k in owned if key == k or key.startswith(f"{k}.") or k.startswith(f"{key}.")), None)


Path = tuple[str, ...]


@dataclass
class Composed:
    """A recipe as far as the operator sees it: the operator's overrides and spec.overrides applied
    to spec.config (or, for spec.recipe, to nothing: only what the overrides say is known)."""

    config: dict[str, Any]
    complete: bool
    """spec.config with no defaults list: a key it lacks has the schema's default"""
    unchecked: set[Path]
    origin: dict[Path, int]
    problems: list[FieldError]

    def setting(self, dotted: str) -> tuple[bool, Any]:
        """(known, value) of a config key; a value only Hydra resolves is not known."""
        path, node = tuple(dotted.split(".")), self.config
        if any(path[:n] in self.unchecked for n in range(len(path) + 1)):
            return False, None
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return self.complete and isinstance(node, dict), _default(dotted) if self.complete else None
            node = node[part]
        return not (isinstance(node, str) and "${" in node), node

    def where(self, dotted: str) -> str | None:
        """Where the user set a key: `spec.overrides[i]` (the last to set it), `spec.config`, or
        None (the schema's default, or unknown)."""
        path = tuple(dotted.split("."))
        setters = (self.origin[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.origin)
        if (setter := next(setters, None)) is not None:
            return f"spec.overrides[{setter}]"
        node: Any = self.config
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return "spec.config"

    def problem(self, dotted: str, value: Any, words: str) -> FieldError:
        """The FieldError of a key's value, at the override or the spec.config field that set it."""
        where = self.where(dotted) or "spec.config"
        if where == "spec.config":
            return FieldError(f"spec.config.{dotted}", value, words)
        return FieldError(where, value, f"{dotted}: {words}")


def _default(dotted: str) -> Any:
    """The runtime schema's default of a dotted key (None where it has none)."""
    node: Any = NexRLConfig.model_construct()  # every default, no required field needed
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return node


def compose(spec: NexRLJobSpec, name: str) -> Composed | None:
    """The recipe as the runtime will see it, as far as that is possible without Hydra (None: a
    defaults list, which only Hydra composes)."""
    from .builders.commands import spec_overrides  # builders -> spec_checks -> here

    inline = spec.config is not None and spec.recipe is None
    config = copy.deepcopy(spec.config) if inline and spec.config is not None else {}
    if config.pop("defaults", ["_self_"]) not in (["_self_"], [], None):
        return None
    found = Composed(config, inline, set(), {}, [])
    for override in spec_overrides(spec, name):
        apply_override(config, override, found.unchecked, owned=frozenset())
    owned = frozenset(operator_keys(spec, name))
    for i, override in enumerate(spec.overrides):
        if problem := apply_override(config, override, found.unchecked, found.origin, i, owned=owned):
            found.problems.append(problem)
    return found


def apply_override(config: dict[str, Any], override: str, unchecked: set[Path],
                   origin: dict[Path, int] | None = None, index: int = -1, *, owned: frozenset[str]
                   ) -> FieldError | None:
    """Apply one Hydra override to the plain dict as Hydra would (plain `key=value` of a missing
    key is widened by the runtime); returns the composition error Hydra would raise. `owned`: the
    keys the operator sets, which this override may not touch (empty for the operator's own)."""
    match = _OVERRIDE.match(override)
    if match is None or owner_of(match["key"], dict.fromkeys(owned, "")) is not None:
        return None  # a group override (key@pkg, a/b), or reported by _overrides
    op, path, value = match["op"] or "", tuple(match["key"].split(".")), match["value"]
    if op == "~" and value is not None:
        value = None  # ~key=value deletes only when the value matches: Hydra's to check
    where, key, dotted = f"spec.overrides[{index}]", path[-1], ".".join(path)
    parent: Any = config
    for part in path[:-1]:
        child = parent.get(part) if isinstance(parent, dict) else None
        if child is None and op == "~":
            return FieldError(where, override, f"{dotted} is not in spec.config: nothing to delete")
        if child is None and isinstance(parent, dict):
            child = parent[part] = {}
        if not isinstance(child, dict):
            unchecked.add(path)  # through a list, an interpolation or a scalar: Hydra's to say
            return None
        parent = child
    if op == "~":
        if key not in parent:
            return FieldError(where, override, f"{dotted} is not in spec.config: nothing to delete")
        del parent[key]
    elif value is None:
        return None  # reported by _overrides
    elif op == "+" and key in parent:
        return FieldError(where, override, f"{dotted} is in spec.config already: "
                                           f"write {override[1:]!r} (set) or {'+' + override!r} (add or set)")
    elif value.strip() == "[]":
        parent[key] = []
    elif _SIMPLE_VALUE.match(value) and "${" not in value:
        parent[key] = _scalar(value)
    else:
        parent[key] = value
        unchecked.add(path)
    if origin is not None:
        origin[path] = index
    return None


def _scalar(text: str) -> Any:
    """A simple override value as Hydra reads it: null, true/false, int, float, quoted or plain string."""
    value = text.strip()
    if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) > 1:
        return value[1:-1]
    lowered = value.lower()
    if lowered == "null":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(value):
        return int(value.replace("_", ""))
    if _FLOAT.match(value):
        return float(value.replace("_", ""))
    return value

"""YAML in and out for the CLI: multi-document files, multi-line strings as `|` blocks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _BlockDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (ConfigMap data) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def dump(data: Any) -> str:
    """One document, keys in insertion order."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=100)


def dump_all(documents: Iterable[Any]) -> str:
    """A multi-document stream, each document starting with `---`."""
    return "".join(f"---\n{dump(doc)}" for doc in documents)


def load_all(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]

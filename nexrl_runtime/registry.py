"""Module registry: a config string names a built-in class or a `module_path:ClassName` in the recipe."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TypeVar

from nexrl_runtime.config.errors import ConfigError

T = TypeVar("T")


class RegistryError(ConfigError):
    """A class spec in the config that does not resolve (a config error: the CLI exits 2)."""


def load_object(spec: str, base_dir: str | Path = ".") -> object:
    """Import `path/to/file.py:Name` (relative to base_dir) or `package.module:Name`."""
    module_part, _, name = spec.partition(":")
    if not module_part or not name:
        raise RegistryError(f"{spec!r}: expected 'module_path:ClassName' (e.g. 'evaluator.py:MyEvaluator')")
    if module_part.endswith(".py"):
        file = Path(module_part)
        file = file if file.is_absolute() else Path(base_dir) / file
        if not file.is_file():
            raise RegistryError(f"{spec!r}: file {file} does not exist")
        mod_name = f"nexrl_recipe_{abs(hash(str(file.resolve())))}_{file.stem}"
        module = sys.modules.get(mod_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(mod_name, file)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module  # dataclasses and pickling need the module registered
            try:
                loader_spec.loader.exec_module(module)
            except Exception as err:  # the recipe's own file: say which and why, not a traceback
                del sys.modules[mod_name]
                why = f"{type(err).__name__}: {err}"
                raise RegistryError(f"{spec!r}: importing {file} failed: {why}") from err
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as err:
            raise RegistryError(f"{spec!r}: cannot import module {module_part!r}: {err}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise RegistryError(f"{spec!r}: module {module_part!r} has no attribute {name!r}") from None


def resolve_class(
    spec: str, builtins: dict[str, type[T]], base: type[T], base_dir: str | Path = ".",
    field: str | None = None,
) -> type[T]:
    """A registry name from `builtins`, or a custom class that must subclass `base`; `field` (the
    config field of `spec`, e.g. `rollout.evaluator`) is put first in the error's message."""
    try:
        return _resolve_class(spec, builtins, base, base_dir)
    except RegistryError as err:
        if field is None:
            raise
        raise RegistryError(f"{field}: {err}") from err.__cause__


def _resolve_class(spec: str, builtins: dict[str, type[T]], base: type[T], base_dir: str | Path) -> type[T]:
    if spec in builtins:
        return builtins[spec]
    if ":" not in spec:
        raise RegistryError(
            f"unknown {base.__name__} {spec!r}; built-ins are {sorted(builtins)}, "
            "or give 'module_path:ClassName'"
        )
    obj = load_object(spec, base_dir)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise RegistryError(f"{spec!r} is not a subclass of {base.__module__}.{base.__name__}")
    return obj

"""Load a recipe: Hydra composition (defaults, ${oc.env:..}, overrides), then pydantic validation.

Any problem becomes a ConfigError naming the dotted path, the bad value and what is allowed,
raised before a single module is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from nexrl_runtime.config.errors import ConfigError, problem_lines
from nexrl_runtime.config.schema import ClusterConfig, NexRLConfig

__all__ = ["ConfigError", "load_cluster", "load_config"]


def format_validation_error(err: ValidationError, model: type[BaseModel] = NexRLConfig) -> str:
    """One line per problem, in the words the operator uses too (config.errors): `path: what is wrong`."""
    return "invalid config:\n  " + "\n  ".join(problem_lines(err, model))


def validate(data: dict[str, Any]) -> NexRLConfig:
    """Pydantic validation of a composed, resolved config dict."""
    try:
        return NexRLConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def is_schema_path(dotted: str, model: type[BaseModel] = NexRLConfig) -> bool:
    """Whether `a.b.c` names a field of the schema (so it may be set even if the YAML omits it)."""
    head, _, rest = dotted.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    sub = field.annotation
    return isinstance(sub, type) and issubclass(sub, BaseModel) and is_schema_path(rest, sub)


def widen_overrides(overrides: list[str]) -> list[str]:
    """Plain `key=value` overrides of schema fields become `++key=value`, so a field that keeps its
    schema default in the YAML can still be overridden; unknown keys stay plain and fail in Hydra."""
    out = []
    for o in overrides:
        key = o.split("=", 1)[0]
        plain = "=" in o and not key.startswith(("+", "~")) and "@" not in key and "/" not in key
        out.append(f"++{o}" if plain and is_schema_path(key) else o)
    return out


def compose_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose a Hydra recipe file with overrides and resolve interpolations into a plain dict."""
    recipe = Path(path).resolve()
    if not recipe.is_file():
        raise ConfigError(f"--config: recipe file not found: {path} (resolved to {recipe})")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipe.parent), version_base=None):
            cfg = compose(config_name=recipe.stem, overrides=widen_overrides(list(overrides or [])))
        data = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot compose {recipe} with overrides {overrides or []}: {err}") from None
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(data, dict)
    data.setdefault("recipe_dir", str(recipe.parent))
    return data


def load_cluster(path: str | Path) -> ClusterConfig:
    """The operator-written cluster section (cluster.yaml in the job's ConfigMap)."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        return ClusterConfig.model_validate(raw)
    except OSError as err:
        raise ConfigError(f"--cluster: cannot read the cluster file {path}: {err.strerror or err}") from None
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, ClusterConfig).replace("\n  ", f"\n  cluster ({path}): ", 1)
        ) from None


def load_config(
    path: str | Path, overrides: list[str] | None = None, cluster_file: str | Path | None = None
) -> NexRLConfig:
    """Compose, merge the cluster section (if any), validate."""
    data = compose_recipe(path, overrides)
    if cluster_file is not None:
        data["cluster"] = load_cluster(cluster_file).model_dump()
    return validate(data)

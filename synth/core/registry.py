"""Registries of kinds, in one style: ``{kind: (config class, implementation)}``, one line per kind.

The registry is the single list of kinds: the pydantic discriminated union a recipe validates against
(``config_union``) and the builder (``build``) both come from it, so a kind cannot be accepted by the
recipe yet unknown to the code, or the other way round. An implementation is a class or function
taking the config first, or a ``"module:name"`` string for kinds whose module pulls in heavy
dependencies (torch, vllm, openai), imported only when a config uses it.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Callable, Mapping, Union

from pydantic import Field

Registry = Mapping[str, tuple[type, Any]]


def config_union(registry: Registry) -> Any:
    """The discriminated union (on ``kind``) of the registry's config classes, in registry order."""
    for kind, (config, _) in registry.items():
        declared = config.model_fields["kind"].default
        if declared != kind:
            raise TypeError(f"registry line {kind!r} names {config.__name__}, whose kind is {declared!r}")
    return Annotated[Union[tuple(config for config, _ in registry.values())], Field(discriminator="kind")]


def implementation(registry: Registry, kind: str) -> Callable:
    """The class or function registered for ``kind`` (imported now when registered by name)."""
    target = registry[kind][1]
    if isinstance(target, str):
        module, name = target.split(":")
        target = getattr(importlib.import_module(module), name)
    return target


def build(registry: Registry, config, *args, **kwargs):
    """``implementation(config.kind)(config, *args, **kwargs)``."""
    return implementation(registry, config.kind)(config, *args, **kwargs)

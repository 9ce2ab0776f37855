"""Name -> implementation registries, each option with its own typed schema registered for Hydra.

A config group (``init``, ``prune``, ...) is a Registry. Registering an option gives it a name, an
implementation and a schema: a dataclass derived from ``Options`` holding exactly the settings the
option reads, stored in Hydra's ConfigStore as ``schema/<group>/<name>``. The option's YAML
(``conf/<group>/<name>.yaml``) names that schema first in its defaults list, so Hydra itself refuses
a key the chosen option does not have, and every value is converted to the field's type.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Generic, Iterator, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf

from sparseprop.errors import ConfigError

T = TypeVar("T")


@dataclass
class Options:
    """The settings of one option of a config group; subclasses add fields and range checks."""

    name: str = MISSING
    # The config group the option belongs to, set when the option is registered.
    group: ClassVar[str] = ""

    def check(self) -> None:
        """Raise ConfigError (via ``refuse``) when a setting is outside what this option allows."""

    def settings(self) -> dict[str, Any]:
        """The option's settings by field name, ``name`` left out."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}

    def refuse(self, key: str, allowed: str) -> None:
        """Raise the ConfigError of setting ``key``: its dotted key, its value and what is allowed."""
        raise ConfigError(f"{self.group}.{key}", getattr(self, key), allowed)


def schema_path(group: str, name: str) -> str:
    """Where the schema of option ``name`` of ``group`` lives in Hydra's ConfigStore (and the YAML's defaults)."""
    return f"schema/{group}/{name}"


class Registry(Generic[T]):
    """Maps the short names used in configs (``init=orthogonal``) to implementations and their schemas."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        """``kind`` names the registry in errors; ``group`` is the Hydra config group its options fill (if any)."""
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._schemas: dict[str, type[Options]] = {}

    def register(self, name: str, schema: type[Options] | None = None) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``, with the option's ``schema`` for a config group."""
        if self.group is not None and schema is None:
            raise ValueError(f"{self.kind} {name!r}: options of config group {self.group!r} need a schema")

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            if schema is not None:
                if not (isinstance(schema, type) and issubclass(schema, Options)):
                    raise TypeError(f"{self.kind} {name!r}: its schema must be a dataclass derived from Options")
                schema.group = self.group or self.kind
                self._schemas[name] = schema
                from hydra.core.config_store import ConfigStore

                group, _, node_name = schema_path(schema.group, name).rpartition("/")
                ConfigStore.instance().store(group=group, name=node_name, node=schema(name=name))
            return obj

        return add

    def get(self, name: str, key: str | None = None) -> T:
        """The implementation called ``name``; a ConfigError naming the valid names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(key or self.kind, name, f"choose one of {', '.join(self.names())}") from None

    def schema(self, name: str) -> type[Options]:
        """The schema (an Options dataclass) of option ``name``."""
        self.get(name, f"{self.group or self.kind}.name")
        return self._schemas[name]

    def options(self, node: DictConfig | dict[str, Any]) -> Options:
        """A composed config node of this group as its option's schema instance, range-checked."""
        plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        schema = self.schema(plain.get("name"))
        own = self.settings_of(plain["name"])
        for key, value in plain.items():
            if key != "name" and key not in own:
                raise self.foreign_setting(plain["name"], key, value)
        opts = schema(**plain)
        opts.check()
        return opts

    def settings_of(self, name: str) -> list[str]:
        """The settings option ``name`` has (its schema's fields but ``name``), in declaration order."""
        return [f.name for f in fields(self.schema(name)) if f.name != "name"]

    def foreign_setting(self, name: str, key: str, value: Any) -> ConfigError:
        """The error for setting ``key``, which option ``name`` of this group does not have."""
        group = self.group or self.kind
        own = self.settings_of(name)
        others = [n for n in self.names() if key in self.settings_of(n)]
        allowed = f"{group}={name} has no setting {key!r} (its settings: {', '.join(own) or 'none'})"
        if others:
            allowed += f"; {', '.join(f'{group}={n}' for n in others)} {'has' if len(others) == 1 else 'have'} it"
        return ConfigError(f"{group}.{key}", value, allowed)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

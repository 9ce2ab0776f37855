"""Overrides applied to composed configs with Hydra's rules, and Hydra's composition errors as one line naming the key."""

from __future__ import annotations

import re

from sparseprop.errors import ConfigError, SparsepropError
from sparseprop.sweeps.jobs import is_group, parse as _parse


def one_line(exc: BaseException) -> str:
    """A one-line account of a Hydra / OmegaConf composition error."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    chain, e = [], exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in reversed(chain):
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            msg = str(getattr(e, "msg", "") or e).strip().splitlines()[0]
            if isinstance(e, ConfigKeyError) or "not in struct" in msg or re.search(r"Key '.*' not in", msg):
                return f"unknown key '{e.full_key}'; `sparseprop train --cfg job` lists every key"
            value = getattr(e, "value", None)
            return f"{e.full_key}={value!r} is not valid: {msg}" if value is not None else f"{e.full_key}: {msg}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines[:2]) if lines else type(exc).__name__


def apply_override(cfg, o) -> None:
    """Apply one value override to a composed config in place, as Hydra does after composing its defaults.

    ``key=v`` changes an existing key (the schema checks its type), ``+key=v`` adds a new one,
    ``++key=v`` adds or changes, ``~key`` (or ``~key=v`` when it holds v) deletes.
    """
    from omegaconf import OmegaConf, open_dict

    key, value = o.key_or_group, o.value()
    refuse_foreign_setting(cfg, key, value)
    current = OmegaConf.select(cfg, key, throw_on_missing=False)
    if o.package is not None:
        raise SparsepropError(f"{o.input_line}: a package (@...) is only allowed on config groups")
    if o.is_delete():
        if current is None:
            raise SparsepropError(f"{o.input_line}: there is no {key} to delete")
        if value is not None and value != current:
            raise SparsepropError(f"{o.input_line}: {key} is {current!r}, not {value!r}")
        from sparseprop.runner import checks

        group, _, setting = key.partition(".")
        registry = checks.registries().get(group)
        if registry is not None and setting and OmegaConf.select(cfg, f"{group}.name") in registry:
            needed = setting in registry.settings_of(cfg[group].name)
        else:
            needed = key in checks.registries() or not checks.unknown_keys(OmegaConf.to_container(nest(key, current)))
        if needed:
            raise SparsepropError(f"{o.input_line} is not valid: {key} is a setting every run needs and cannot be "
                                  f"deleted; change it with {key}=...")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        with open_dict(node):
            del node[leaf]
    elif o.is_add() and current is not None and not isinstance(value, (dict, list)):
        raise SparsepropError(f"{o.input_line}: {key} already exists; set it with {o.input_line[1:]} "
                              f"(or +{o.input_line} to add or change it)")
    else:
        if isinstance(current, bool) and isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ConfigError(key, value, "true or false")  # OmegaConf would read 2 as true
        OmegaConf.update(cfg, key, value, merge=True, force_add=o.is_add() or o.is_force_add())


def lacks_setting(cfg, key: str) -> bool:
    """Whether ``key`` is a setting that the chosen option of its config group does not have."""
    try:
        refuse_foreign_setting(cfg, key, None)
    except ConfigError:
        return True
    return False


def refuse_foreign_setting(cfg, key: str, value: object) -> None:
    """A ConfigError when ``key`` is a setting the group's chosen option does not have (``prune=random prune.target=x``)."""
    from omegaconf import OmegaConf

    from sparseprop.runner import checks

    group, _, setting = key.partition(".")
    registry = checks.registries().get(group)
    name = OmegaConf.select(cfg, f"{group}.name", default=None) if registry is not None else None
    if registry is not None and setting and name in registry and setting.partition(".")[0] not in registry.settings_of(name):
        raise registry.foreign_setting(name, setting.partition(".")[0], value)


def nest(key: str, value: object):
    """``a.b`` and ``v`` as the config ``{a: {b: v}}``."""
    from omegaconf import OmegaConf

    node: object = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return OmegaConf.create(node)


def compose_or_fail(compose, config_name: str, overrides: list[str], hydra: bool = False):
    """Hydra's composition, any failure as one line."""
    from hydra.errors import MissingConfigException

    try:
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra)
    except MissingConfigException as exc:
        missing = getattr(exc, "missing_cfg_file", None) or ""
        group, _, name = missing.rpartition("/")
        if getattr(exc, "options", None) and group:
            raise SparsepropError(f"{group}={name!r} is not valid: choose one of {', '.join(exc.options)}") from None
        raise SparsepropError(one_line(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf errors become one line
        line = one_line(exc)
        unknown = re.match(r"unknown key '(\w+)\.(\w+)'", line)
        if unknown:
            _refuse_unknown_setting(compose, config_name, overrides, *unknown.groups())
        raise SparsepropError(line) from None


def _refuse_unknown_setting(compose, config_name: str, overrides: list[str], group: str, setting: str) -> None:
    """Raise the option's own error when ``group.setting`` is a setting the chosen option of ``group`` lacks."""
    from sparseprop.runner import checks

    registry = checks.registries().get(group)
    if registry is None:
        return
    parsed = _parse(overrides)
    choices = [o.input_line for o in parsed
               if o.key_or_group.startswith("hydra.") or is_group(o.key_or_group.lstrip("+~").partition("@")[0])]
    try:
        name = compose(config_name=config_name, overrides=choices)[group].name
    except Exception:  # noqa: BLE001 - the group choice itself is broken: the generic message stands
        return
    values = [o.value() for o in parsed if o.key_or_group == f"{group}.{setting}"]
    if name in registry and setting not in registry.settings_of(name):
        raise registry.foreign_setting(name, setting, values[-1] if values else None)

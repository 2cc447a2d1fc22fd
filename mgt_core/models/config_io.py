"""Reading a model config dict into its frozen dataclass: unknown keys and bad values are load errors
naming the file, so a wrong or hand-edited config.json never reaches a constructor."""

from __future__ import annotations

from dataclasses import fields

from ..errors import MGTLoadError


def known_fields(cls, config: dict, source: str, label: str, ignore: tuple[str, ...] = ()) -> dict:
    """The config's values for ``cls``'s fields; keys starting with ``_`` and ``ignore`` are skipped."""
    names = {f.name for f in fields(cls)}
    unknown = [k for k in config if k not in names and not k.startswith("_") and k not in ignore]
    if unknown:
        raise MGTLoadError(f"{source}: unknown {label} config keys {unknown}")
    return {k: v for k, v in config.items() if k in names}


def int_config(cls, config: dict, source: str, label: str, family: str, ignore: tuple[str, ...] = ()):
    """An all-integer config of one model family, validated (``cls.validate(source)``)."""
    if config.get("family", family) != family:
        raise MGTLoadError(f"{source}: family {config['family']!r} is not a {label} config")
    values = known_fields(cls, config, source, label, ("family", *ignore))
    try:
        cfg = cls(**{k: int(v) for k, v in values.items()})
    except (TypeError, ValueError) as e:
        raise MGTLoadError(f"{source}: bad {label} config ({e})") from None
    cfg.validate(source)
    return cfg

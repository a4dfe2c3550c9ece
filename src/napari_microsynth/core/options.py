"""Declared options: what a model family lets a user set, with defaults, ranges and help.

A family's settings are a dataclass whose fields carry their help text and limits (made with
:func:`option`). The CLI builds its flags and the widgets build their forms from :func:`declared_options`,
so a new family never needs its own argument parsing:

>>> from dataclasses import dataclass
>>> @dataclass
... class Sampling:
...     steps: int = option(20, "denoising steps", low=1)
...     sampler: str = option("ddim", "reverse-diffusion sampler", choices=("ddim", "dpm++"))
>>> [o.name for o in declared_options(Sampling)]
['steps', 'sampler']
>>> declared_options(Sampling)[0].parse("50")
50
>>> apply_options(Sampling, {"sampler": "dpm++"}).sampler
'dpm++'
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Option:
    """One setting a user may change.

    ``kind`` is the value type (bool, int, float or str); ``optional`` means ``None`` is allowed (the
    family then picks a value itself, e.g. the sampler's own step count); ``choices`` lists the allowed
    values of a text option; ``low`` / ``high`` bound a number (inclusive); ``advanced`` options are kept
    out of compact forms.
    """

    name: str
    default: Any
    help: str
    kind: type
    optional: bool = False
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    advanced: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--guidance-scale``."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's type and checked; ValueError naming the option otherwise."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{self.name} needs a value")
        if self.kind is bool:
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
            return bool(value)
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{self.name} must be a number, got {value!r}")
            if self.kind is int and float(value) != int(value):
                raise ValueError(f"{self.name} must be a whole number, got {value!r}")
            value = self.kind(value)
            if not math.isfinite(value):
                raise ValueError(f"{self.name} must be finite, got {value}")
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ValueError(f"{self.name} must be in {self.range_text()}, got {value}")
            return value
        value = str(value)
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return value

    def parse(self, text: str) -> Any:
        """A value typed by a user (command line, ``KEY=VALUE``) as the option's type, checked."""
        text = text.strip()
        if self.optional and text.lower() in ("", "none", "auto"):
            return None
        if self.kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(f"{self.name}: expected true or false, got {text!r}")
            return text.lower() in _TRUE
        if self.kind in (int, float):
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{self.name}: expected a number, got {text!r}") from None
            return self.check(int(number) if self.kind is int and number.is_integer() else number)
        return self.check(text)

    def range_text(self) -> str:
        """The allowed values in words, e.g. ``[0, 1]`` or ``ddim, dpm++``."""
        if self.choices:
            return ", ".join(map(str, self.choices))
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"

    def describe(self) -> str:
        """Help text with the default and limits, for ``--help`` and tooltips."""
        default = "auto" if self.default is None else self.default
        limits = "" if self.kind in (bool, str) and not self.choices else f"; allowed {self.range_text()}"
        return f"{self.help} (default {default}{limits})"


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] = (),
    low: float | None = None,
    high: float | None = None,
    advanced: bool = False,
) -> Any:
    """A dataclass field that declares an :class:`Option` (its name and type come from the field)."""
    meta = {"help": help, "choices": tuple(choices), "low": low, "high": high, "advanced": advanced}
    return dataclasses.field(default=default, metadata={"option": meta})


def _kind(field: dataclasses.Field, default: Any) -> tuple[type, bool]:
    """The value type of a field and whether it may be None (from the annotation text or the default)."""
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    optional = "None" in annotation or default is None
    for kind in (bool, int, float, str):
        if kind.__name__ in annotation.replace("None", ""):
            return kind, optional
    if default is not None:
        return type(default), optional
    raise TypeError(f"option {field.name!r}: cannot tell its type from {annotation!r}")


def declared_options(config_class: type) -> tuple[Option, ...]:
    """The options declared by the fields of a settings dataclass, in field order.

    Fields made with :func:`option` carry their help and limits; other fields with a plain default (bool,
    int, float, str or None) are declared as advanced options with their name as help.
    """
    options = []
    for field in dataclasses.fields(config_class):
        if not field.init or field.name.startswith("_"):
            continue
        default = field.default
        if default is dataclasses.MISSING:
            if field.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                continue
            default = field.default_factory()  # type: ignore[misc]
        if default is not None and not isinstance(default, (bool, int, float, str)):
            continue
        meta = field.metadata.get("option", {"help": field.name.replace("_", " "), "advanced": True})
        kind, optional = _kind(field, default)
        options.append(Option(field.name, default, meta["help"], kind, optional, meta.get("choices", ()),
                              meta.get("low"), meta.get("high"), meta.get("advanced", False)))
    return tuple(options)


def apply_options(config_class: type, values: Mapping[str, Any]) -> Any:
    """An instance of ``config_class`` with ``values`` (checked against the declarations) over the defaults.

    Unknown names raise a ValueError that lists the known ones.
    """
    known = {o.name: o for o in declared_options(config_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
    return config_class(**{name: known[name].check(value) for name, value in values.items()})


def parse_settings(config_class: type, pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) as checked values of ``config_class``'s options (``-`` or ``_``)."""
    known = {o.name: o for o in declared_options(config_class)}
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ValueError(f"{pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        settings[key] = known[key].parse(value)
    return settings

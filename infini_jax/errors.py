"""The project's errors, and the checks that raise them.

Every error a user can fix (a config value, a data file, a tokenizer, a checkpoint) is an
`Error` whose message is one line naming the field or file and what to do. The command-line
runner (`infini_jax.cli.run`) prints it as that one line and exits with status 2.
"""

import dataclasses
from typing import Any, Self

import ml_collections


class Error(ValueError):
    """Base class: bad input; the message names the field or file and what to do."""


class ConfigError(Error):
    """A config value (or flag) that cannot work."""


class DataError(Error):
    """Unusable data input: a missing, empty or corrupt file or shard."""


class TokenizerError(Error):
    """A tokenizer file that cannot be used, or does not fit the model."""


class CheckpointError(Error):
    """A checkpoint that is missing, or a step that is not there."""


class ConvertError(Error):
    """A Hugging Face checkpoint that cannot be imported, or a model that cannot be exported."""


def check(ok: bool, message: str) -> None:
    """Raises `ConfigError(message)` unless `ok`."""
    if not ok:
        raise ConfigError(message)


def check_choice(value: Any, options: tuple, field: str) -> None:
    check(value in options, f"config.{field}={value!r} is not one of {options}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_ints(values: dict[str, Any], prefix: str) -> None:
    """Each `values[name]` must be an integer > 0; `prefix` is the section ("model.")."""
    for name, value in values.items():
        check(
            is_int(value) and value > 0,
            f"config.{prefix}{name}={value!r} must be a positive integer",
        )


def section(name: str, methods: type, defaults: ml_collections.ConfigDict, **nested: type) -> type:
    """The frozen dataclass `name` of one config section: a field per entry of `defaults` (one
    section of `infini_jax.defaults.base_config()`, so fields are declared once), typed like its
    default (`nested` gives the types of sub-sections), with the methods of `methods`."""
    fields = [(key, nested.get(key, type(value))) for key, value in defaults.items()]
    cls = dataclasses.make_dataclass(name, fields, bases=(methods,), frozen=True)
    cls.__module__ = methods.__module__  # pickled by name, e.g. for grain's worker processes
    return cls


class Section:
    """Base of the methods of the config sections (`section` makes the dataclass): built from
    one section of the ConfigDict, with no field unknown or missing, then `check`ed."""

    PREFIX = ""  # the section's path in the config, e.g. "model"

    def check(self) -> None:
        """Raises `ConfigError` naming the first bad field; overridden by each section."""

    @classmethod
    def from_config(cls, source: ml_collections.ConfigDict | dict) -> Self:
        """The section of `source` (`config.model`, ...; or its dict), checked."""
        values = source.to_dict() if isinstance(source, ml_collections.ConfigDict) else source
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        missing = sorted(set(fields) - set(values))
        check(
            not unknown and not missing,
            f"config.{cls.PREFIX}: unknown fields {unknown}, missing fields {missing}",
        )
        kwargs = {}
        for name, f in fields.items():
            value = values[name]
            if isinstance(f.type, type) and issubclass(f.type, Section):
                value = f.type.from_config(value)
            kwargs[name] = value
        out = cls(**kwargs)
        out.check()
        return out

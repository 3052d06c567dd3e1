"""Config groups checked against their known fields and defaults.

Every builder of the train loop (optimizer, objective, model, input, evals)
declares its fields with defaults; a misspelt or mistyped field fails here,
before anything is compiled, with the list of valid fields.
"""

from collections.abc import Mapping
from typing import Any

from idlearn.errors import ConfigError

REQUIRED = object()  # marks a field without a default


def _plain(value: Any) -> Any:
  if hasattr(value, "to_dict"):  # ml_collections.ConfigDict
    return value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  return value


def _type_ok(value: Any, default: Any) -> bool:
  if default is None or default is REQUIRED or value is None:
    return True
  if isinstance(default, bool):
    return isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, int | float) and not isinstance(value, bool)
  if isinstance(default, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(default, tuple | list):
    return isinstance(value, tuple | list)
  return isinstance(value, type(default))


def resolve(
  group: Mapping[str, Any] | None, fields: Mapping[str, Any], where: str
) -> dict[str, Any]:
  """Merges a config group over its defaults, checking names and types.

  Args:
    group: the user's config group (ConfigDict or mapping), or None.
    fields: field name -> default value (`REQUIRED` for no default).
    where: the group's path for messages, e.g. "config.optim".
  Returns:
    A plain dict with every field of `fields`.
  Raises:
    ValueError: an unknown field, a missing required one, or a value whose
      type does not match the default's; the message lists the valid fields.
  """
  given = _plain(group) or {}
  valid = ", ".join(sorted(fields))
  unknown = sorted(set(given) - set(fields))
  if unknown:
    raise ConfigError(
      f"{where}: unknown field(s) {unknown}; valid fields are: {valid}"
    )
  out = {}
  for name, default in fields.items():
    value = given.get(name, default)
    if value is REQUIRED:
      raise ConfigError(
        f"{where}.{name} is required; valid fields are: {valid}"
      )
    if not _type_ok(value, default):
      raise ConfigError(
        f"{where}.{name} = {value!r} has type {type(value).__name__}, "
        f"expected {type(default).__name__} (like the default "
        f"{default!r}); valid fields are: {valid}"
      )
    if isinstance(default, float) and isinstance(value, int):
      value = float(value)
    out[name] = value
  return out


def choice(value: str, options: Mapping[str, Any] | list, where: str) -> str:
  """Checks a name against its registry; ValueError lists the options."""
  if value not in options:
    raise ConfigError(
      f"{where} = {value!r} is not one of: {', '.join(sorted(options))}"
    )
  return value

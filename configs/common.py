"""Shared helpers for experiment configs (imports only ml_collections)."""

import os

import ml_collections

# The larger real sets that are not bundled with the package (MARS mini):
# the checkout's ../shared/data, or $IDLEARN_SHARED_DATA.
SHARED_DATA = os.environ.get("IDLEARN_SHARED_DATA", "../shared/data")


def shared(name: str) -> str:
  """Absolute path of data set folder `name` under SHARED_DATA."""
  return os.path.abspath(os.path.join(SHARED_DATA, name))


def _convert(value: str, default):
  if isinstance(default, bool):
    if value.lower() not in ("true", "false", "1", "0", ""):
      raise ValueError(f"expected a boolean, got {value!r}")
    return value.lower() in ("true", "1", "")
  if isinstance(default, int):
    return int(value)
  if isinstance(default, float):
    return float(value)
  return value


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config's `:arg` string, e.g. "smoke" or "variant=S/16,smoke".

  Items are comma-separated; `key=value` sets a field (converted to the
  default's type), a bare `key` sets a boolean to True.

  Args:
    arg: the text after ":" in --config=path.py:arg, or None.
    **defaults: every accepted key with its default value.
  Returns:
    A locked ConfigDict of the keys.
  Raises:
    ValueError: an unknown key (the message lists the known ones) or a
      value that does not convert.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
        f"config arg {key!r} unknown; known: {', '.join(sorted(defaults))}"
      )
    try:
      out[key] = _convert(value.strip(), defaults[key])
    except ValueError as e:
      raise ValueError(f"config arg {key}={value!r}: {e}") from None
  return ml_collections.ConfigDict(out, type_safe=True).lock()


def pku_reid_eval(size: tuple[int, int]) -> dict:
  """config.evals of the PKU-Reid runs: the 12 held-out ids, Market-1501
  protocol, cosine on the model's eval feature, plain and camera-centred."""
  return dict(
    pku_reid=dict(
      type="reid", data="pku_reid", image_size=size, batch_size=64,
      log_steps=0, feature="eval", metric="cosine", camera_centering=True,
    )
  )  # fmt: skip

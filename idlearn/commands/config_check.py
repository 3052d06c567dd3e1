"""The train command's early config checks (before absl loads it)."""

import importlib.util
import os

from absl import app

from idlearn import errors


def _config_arg(argv: list[str]) -> str | None:
  return next(
    (a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None
  )


def check_config(argv: list[str]) -> None:
  """Fails early, in one line, on a config that cannot load: a missing
  file, an unknown `:arg`, or an unknown --config.a.b=v (ml_collections
  reports only the missing name; users need the valid ones).

  Raises:
    app.UsageError: with the message to print.
  """
  spec = _config_arg(argv)
  if not spec:
    return
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise app.UsageError(f"--config: no config file {path}")
  try:
    module_spec = importlib.util.spec_from_file_location("_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(*([arg] if arg else []))
  except (ValueError, errors.UserError) as e:
    raise app.UsageError(f"--config={spec}: {e}") from None
  paths = [
    a[len("--config.") :].split("=", 1)[0]
    for a in argv
    if a.startswith("--config.")
  ]
  for override in paths:
    node, walked = config, "config"
    for key in override.split("."):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if key not in keys:
        raise app.UsageError(
          f"--config.{override}: {walked} has no field {key!r}; valid "
          f"fields are: {', '.join(sorted(keys))}"
        )
      node, walked = node[key], f"{walked}.{key}"

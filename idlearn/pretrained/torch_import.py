"""Import PyTorch state dicts into idlearn encoders, output-equivalent.

Supported layouts (keys as the original projects write them):
  - torchvision ResNet-18/34/50 ("conv1.weight", "layer1.0.bn1.running_mean",
    classifier "fc.*" dropped) -> "resnet18" / "resnet34" / "resnet50";
  - IBN-Net / torchreid ResNet-50-IBN-a ("layer1.0.bn1.IN.weight", ...)
    -> "resnet50_ibn_a";
  - torchreid OSNet and OSNet-AIN (classifier "classifier.*" dropped)
    -> "osnet_x1_0", ..., "osnet_ain_x1_0", ...;
  - timm ViT vit_{tiny,small,base}_patch{16,8}_224 (head "head.*" dropped)
    -> "vit_ti16", "vit_s16", "vit_b16", "vit_s8", ...; the position
    embeddings are resized to `img_size` as timm does (bicubic, antialias).

Our module names are the PyTorch module paths with "." before an index
replaced by "_", so a key maps by rule: conv weights OIHW -> HWIO "kernel",
linear weights [out, in] -> [in, out] "kernel", norm weights -> "scale",
running_mean / running_var -> batch_stats "mean" / "var".
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from idlearn import encoders

# Keys of the original models that are not part of our encoders.
_DROPPED = {
  "resnet": ("fc.", "classifier."),
  "osnet": ("classifier.",),
  "vit": ("head.",),
}
# Our params with no PyTorch counterpart, and the value they import as.
# Keyed by the last two path entries (module, leaf).
_DEFAULTS = {("gem", "p"): lambda shape: np.full(shape, 3.0)}


def _family(arch: str) -> str:
  for family in _DROPPED:
    if arch.startswith(family):
      return family
  raise ValueError(
    f"arch {arch!r} has no PyTorch import; use one of "
    f"{[n for n in encoders.names() if _known(n)]}"
  )


def _known(name: str) -> bool:
  return name.startswith(tuple(_DROPPED))


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch.Tensor; torch itself is not needed
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def _target_key(key: str, ndim: int) -> tuple[tuple[str, ...], str]:
  """PyTorch key -> (flax path incl. collection, layout tag)."""
  *mods, leaf = key.split(".")
  path: list[str] = []
  for part in mods:  # "layer1.0.conv1" -> ["layer1_0", "conv1"]
    if part.isdigit() and path:
      path[-1] += "_" + part
    else:
      path.append(part)
  if leaf == "running_mean":
    return ("batch_stats", *path, "mean"), "vector"
  if leaf == "running_var":
    return ("batch_stats", *path, "var"), "vector"
  if leaf == "weight" and ndim == 4:
    return ("params", *path, "kernel"), "conv"
  if leaf == "weight" and ndim == 2:
    return ("params", *path, "kernel"), "linear"
  if leaf == "weight":
    return ("params", *path, "scale"), "vector"
  return ("params", *path, leaf), "as_is"


def _to_flax(value: np.ndarray, layout: str) -> np.ndarray:
  if layout == "conv":  # OIHW -> HWIO
    return value.transpose(2, 3, 1, 0)
  if layout == "linear":  # [out, in] -> [in, out]
    return value.T
  return value


def _torch_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
  """Our shape written in PyTorch's layout (for error messages)."""
  if layout == "conv":
    return (shape[3], shape[2], shape[0], shape[1])
  if layout == "linear":
    return tuple(shape[::-1])
  return tuple(shape)


def _torch_name(path: tuple[str, ...]) -> str:
  """Inverse of `_target_key`, for naming a missing key."""
  coll, *mods, leaf = path
  leaf = {
    "kernel": "weight",
    "scale": "weight",
    "mean": "running_mean",
    "var": "running_var",
  }.get(leaf, leaf)
  mods = [re.sub(r"_(\d+)", r".\1", m) for m in mods]
  return ".".join([*mods, leaf])


def _bicubic_aa_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] weights of PyTorch's bicubic, antialias=True resize.

  align_corners=False, cubic a=-0.5 and a support widened by the scale when
  shrinking, each row normalised (PyTorch's `_upsample_bicubic2d_aa`, the
  PIL algorithm).
  """

  def cubic(x):
    a, x = -0.5, abs(x)
    if x < 1:
      return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
      return (((x - 5) * x + 8) * x - 4) * a
    return 0.0

  scale = in_size / out_size
  support = 2.0 * max(scale, 1.0)
  invscale = 1.0 / scale if scale >= 1.0 else 1.0
  mat = np.zeros((out_size, in_size))
  for i in range(out_size):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    w = np.array([cubic((j - center + 0.5) * invscale) for j in range(lo, hi)])
    mat[i, lo:hi] = w / w.sum()
  return mat


def resize_pos_embed(
  pos_embed: np.ndarray,
  new_grid: tuple[int, int],
  old_grid: tuple[int, int] | None = None,
  num_prefix_tokens: int = 1,
) -> np.ndarray:
  """Resizes ViT position embeddings as timm's `resample_abs_pos_embed`.

  Args:
    pos_embed: [1, num_prefix_tokens + gh * gw, d].
    new_grid: target (gh', gw').
    old_grid: source (gh, gw); square if None.
    num_prefix_tokens: leading tokens (class token) kept as they are.
  Returns:
    float32 [1, num_prefix_tokens + gh' * gw', d].
  """
  prefix, grid = np.split(
    np.asarray(pos_embed, np.float64), [num_prefix_tokens], axis=1
  )
  n, d = grid.shape[1], grid.shape[2]
  if old_grid is None:
    side = int(round(n**0.5))
    if side * side != n:
      raise ValueError(
        f"pos_embed has {n} patch tokens, not a square grid; pass old_grid"
      )
    old_grid = (side, side)
  grid = grid.reshape(*old_grid, d)
  rows = _bicubic_aa_matrix(old_grid[0], new_grid[0])
  cols = _bicubic_aa_matrix(old_grid[1], new_grid[1])
  grid = np.einsum("ih,hwd,jw->ijd", rows, grid, cols)
  grid = grid.reshape(1, new_grid[0] * new_grid[1], d)
  return np.concatenate([prefix, grid], axis=1).astype(np.float32)


def from_torch(
  arch: str, state_dict: Mapping[str, Any], **encoder_kw: Any
) -> dict[str, Any]:
  """Converts a PyTorch state dict into variables for `get_encoder(arch)`.

  Args:
    arch: encoder name, e.g. "resnet50", "resnet50_ibn_a", "osnet_x1_0",
      "osnet_ain_x1_0", "vit_s16".
    state_dict: key -> torch.Tensor or array, in the original project's
      layout (a "module." prefix from DataParallel is stripped).
    **encoder_kw: passed to `get_encoder` (e.g. img_size=(256, 128) for a
      ViT, whose position embeddings are then resized; last_stride=1).
  Returns:
    {"params": ..., "batch_stats": ...} (batch_stats for CNNs) as float32
    jax arrays, so that `model.apply(variables, images, train=False)`
    matches the PyTorch model's eval-mode output.
  Raises:
    ValueError: naming every missing, unexpected or mis-shaped key, with
      both shapes.
  """
  family = _family(arch)
  model = encoders.get_encoder(arch, **encoder_kw)
  size = tuple(getattr(model, "img_size", (64, 32)))
  abstract = jax.eval_shape(
    lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, *size, 3)), train=False
    )
  )
  want = {path: leaf.shape for path, leaf in _flatten(abstract).items()}
  got, layouts, problems = {}, {}, []
  for key, value in state_dict.items():
    key = key.removeprefix("module.")
    if key.endswith("num_batches_tracked") or key.startswith(_DROPPED[family]):
      continue
    value = _to_numpy(value)
    path, layout = _target_key(key, value.ndim)
    if path not in want:
      problems.append(f"unexpected key {key!r} with shape {value.shape}")
      continue
    layouts[path] = layout
    if key == "pos_embed" and value.shape[1] != want[path][1]:
      value = resize_pos_embed(value, model.grid)
    value = _to_flax(value, layout)
    if value.shape != tuple(want[path]):
      problems.append(
        f"key {key!r} has shape {_torch_shape(value.shape, layout)} but "
        f"{arch} expects {_torch_shape(want[path], layout)}"
      )
      continue
    got[path] = value
  for path, shape in want.items():
    if path in got:
      continue
    if path[-2:] in _DEFAULTS:
      got[path] = _DEFAULTS[path[-2:]](shape)
    else:
      layout = (
        "conv"
        if len(shape) == 4
        else "linear"
        if (len(shape) == 2 and path[-1] == "kernel")
        else "vector"
      )
      problems.append(
        f"missing key {_torch_name(path)!r} (expected shape "
        f"{_torch_shape(shape, layout)})"
      )
  if problems:
    raise ValueError(
      f"state_dict does not fit {arch}:\n  " + "\n  ".join(problems)
    )
  return _unflatten({p: jnp.asarray(v, jnp.float32) for p, v in got.items()})


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, (*prefix, k)))
    else:
      out[(*prefix, k)] = v
  return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
  out: dict = {}
  for path, v in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return out

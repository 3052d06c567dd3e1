r"""Export a trained encoder for deployment, preprocessing inside.

  idlearn export --model=runs/quickstart --format=stablehlo --output=r.shlo
  idlearn export --model=runs/quickstart --format=onnx --output=reid.onnx

The graph takes uint8 RGB [batch, h, w, 3] at the encoder's input size and
returns L2-normalised float32 features; FILE.json says the size, resize and
feature. ONNX needs `pip install 'idlearn[export]'` and
`pip install --no-deps jax2onnx==0.17.1`.
"""

from absl import flags

from idlearn.commands import common

FORMAT = flags.DEFINE_enum(
  "format", "stablehlo", ["stablehlo", "onnx"], "Export format."
)
OUTPUT = flags.DEFINE_string("output", None, "The file to write.")


def main(argv: list[str]) -> None:
  del argv
  from idlearn.errors import DataError
  from idlearn.inference import export

  if not OUTPUT.value:
    raise DataError("--output is required")
  embedder = common.embedder()
  try:
    meta = export.export(embedder, OUTPUT.value, FORMAT.value)
  except ImportError as e:
    raise DataError(str(e)) from None
  h, w = embedder.image_size
  print(
    f"{FORMAT.value}: {OUTPUT.value} ({meta['bytes'] / 2**20:.1f} MiB; "
    f"uint8 [batch, {h}, {w}, 3] -> float32 {meta['output']['shape']}); "
    f"{OUTPUT.value}.json describes it"
  )

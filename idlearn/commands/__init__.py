"""`idlearn <command>`: using a trained encoder, and choosing training data.

  idlearn embed    --model=PATH --images=DIR|GLOB --output=feats.npz
  idlearn export   --model=PATH --format=onnx|stablehlo --output=FILE
  idlearn score    --model=PATH --reference=DIR --generated=DIR
  idlearn evaluate --model=PATH --query=DIR --gallery=DIR | --pairs=FILE
  idlearn select   --pool=NAME=DIR ... --target=DIR --ids=N --out=DIR

Each module defines its own absl flags (imported only for its command) and
`main(argv)`; `idlearn.main` dispatches.
"""

COMMANDS = {
  "embed": "features of images -> .npz",
  "export": "the encoder as StableHLO or ONNX, preprocessing inside",
  "score": "identity similarity of generated images to references",
  "evaluate": "re-ID or verification metrics on your own folders",
  "select": "SnP: training identities for a target domain -> image folder",
}

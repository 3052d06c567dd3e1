"""Printing results: the table training and `idlearn evaluate` print."""

# Metrics that are not fractions: printed as they are, not in %.
_PLAIN = ("utilization", "effective_rank", "effective_rank_unit")


def _value(metric: str, value: float) -> str:
  return f"{value:5.3f}" if metric in _PLAIN else f"{100 * value:5.1f}"


def summary(results: dict[str, float]) -> str:
  """Eval results as a table; the untrained model's next to the trained one.

  Example row: "pku_reid  rank1  untrained 14.1  trained 71.3".
  """
  rows = []
  order = ["rank1", "mAP", "rank5", "rank10", "mINP"]

  def rank(key):
    metric = key.rsplit("/", 1)[-1]
    return key.rsplit("/", 1)[0], order.index(metric) if metric in order else 9

  evals = [k for k in results if k.startswith("eval/")]
  width = max([7] + [len(k.split("/", 2)[2]) for k in evals])
  name_width = max([12] + [len(k.split("/", 2)[1]) for k in evals])
  for key, value in sorted(results.items(), key=lambda kv: rank(kv[0])):
    if not key.startswith("eval/"):
      continue
    _, name, metric = key.split("/", 2)
    before = results.get(f"untrained/{key}")
    row = f"{name:<{name_width}} {metric:<{width}}"
    if before is not None:
      row += f" untrained {_value(metric, before)}"
    rows.append(row + f"  trained {_value(metric, value)}")
  return "\n".join(rows)

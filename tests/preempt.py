"""Stop a training run as a preemption would, at a chosen step."""

import contextlib

from idlearn.training import checkpoint


@contextlib.contextmanager
def preempted_after(step: int):
  """Inside, a run saves step `step` and exits as after a SIGTERM.

  Resuming tests stop this way rather than with a smaller total_steps: the
  resumed run then compiles the same programs (the compilation cache hits)
  and its schedules are those of the uninterrupted run.
  """
  watch = checkpoint.Checkpointer.preempted
  checkpoint.Checkpointer.preempted = lambda self, s: (
    s == step or watch(self, s)
  )
  try:
    yield
  finally:
    checkpoint.Checkpointer.preempted = watch

"""The errors a user can cause and fix: the command line prints them as one
line and exits non-zero; anything else is a bug and keeps its traceback.

Each subclasses the builtin a caller would catch (ValueError, OSError, ...)
as well as `UserError`.
"""


class UserError(Exception):
  """An expected error with a message that says what to change."""


class ConfigError(UserError, ValueError):
  """A config field, value or combination that cannot run."""


class DataError(UserError, ValueError):
  """Data files missing, unreadable or not in the expected layout."""


class CheckpointError(UserError, ValueError):
  """A workdir whose checkpoints cannot be resumed (incompatible, or none
  readable)."""


class WorkdirLocked(UserError, RuntimeError):
  """Another live process trains in the same workdir."""


class NonFiniteLoss(UserError, FloatingPointError):
  """Training diverged; the last finite checkpoint is kept."""


class DiskFull(UserError, OSError):
  """A write failed for lack of space; earlier checkpoints are intact."""


# What the command line returns when a run stopped at a preemption notice
# (SIGTERM) after saving, so that a scheduler can requeue it (sysexits.h
# EX_TEMPFAIL: "temporary failure, the user is invited to retry").
PREEMPTED_EXIT_CODE = 75

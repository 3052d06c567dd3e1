"""One run per workdir: an exclusive lock held while training.

The lock is an `flock` on `<workdir>/.lock`: the kernel drops it when the
holder exits, however it exits (kill -9 included), so a stale lock never
blocks the next run. The file names the holder for the message another
launch gets.
"""

import fcntl
import json
import os
import socket
import time

import jax

from idlearn.errors import WorkdirLocked

LOCK_FILE = ".lock"


class WorkdirLock:
  """Holds `<workdir>/.lock` (process 0 of a run) until `release`.

  Raises:
    WorkdirLocked: another live process holds it (named in the message).
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._fd = None
    if jax.process_index() != 0:
      return
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read(fd)
      os.close(fd)
      raise WorkdirLocked(
        f"{os.path.dirname(self.path)} is in use by process "
        f"{holder.get('pid', '?')} on {holder.get('host', '?')} (since "
        f"{holder.get('since', '?')}): wait for it to finish, stop it, or "
        "pass another --workdir"
      ) from None
    os.ftruncate(fd, 0)
    holder = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.write(fd, json.dumps(holder).encode())
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def _read(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return json.loads(os.read(fd, 4096).decode() or "{}")
  except (OSError, ValueError):
    return {}

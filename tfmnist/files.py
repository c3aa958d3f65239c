"""Files that appear whole or not at all: atomic folders and files, checksums.

Everything tfmnist writes for someone else to read (records, exports,
reports, run files, predictions) goes through `atomic_folder` or
`write_text_atomically`: a temporary name beside the destination, renamed
into place on success, removed on failure. A full disk, a quota or a
read-only destination becomes a one-line DataError.
"""

import contextlib
import errno
import hashlib
import os
import shutil
import socket

import tensorflow as tf

from tfmnist.errors import DataError

# Write failures that are about the destination, not about the data.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)


@contextlib.contextmanager
def atomic_folder(final_path, overwrite=False):
  """Yields a temporary folder that replaces `final_path` only on success.

  The temporary folder sits beside the destination (same file system, so the
  rename is atomic) and is deleted when the body raises. An existing
  destination is replaced only with `overwrite`, and removed only after the
  new folder is in place.

  Without `overwrite`, a destination that another process (another worker
  of a cluster) put in place while the body ran is kept, and this copy is
  dropped with a DataError. A full disk, a quota or a read-only or
  forbidden destination is a DataError too, with nothing left behind.
  """
  parent, name = os.path.split(os.path.abspath(final_path))
  if os.path.exists(final_path) and not overwrite:
    raise DataError(f"{final_path}: already exists; set overwrite to replace it")
  try:
    os.makedirs(parent, exist_ok=True)
    # Host and pid: workers of a cluster may share the parent folder.
    tmp = os.path.join(parent, f".{name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
  except OSError as e:
    raise DataError(f"{final_path}: cannot write here: {e.strerror}") from None
  try:
    with refused_writes(final_path):
      yield tmp
    old = None
    if os.path.exists(final_path):
      if not overwrite:
        raise DataError(f"{final_path}: another process wrote it meanwhile; kept that one")
      old = os.path.join(parent, f".{name}.old-{socket.gethostname()}-{os.getpid()}")
      os.replace(final_path, old)
    try:
      os.replace(tmp, final_path)
    except OSError as e:  # Another process's folder landed first (ENOTEMPTY).
      if old:
        os.replace(old, final_path)
      raise DataError(f"{final_path}: another process wrote it meanwhile; kept that one "
                      f"({e.strerror})") from None
    if old:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _write_failure(error):
  """The reason, when `error` says the destination refused the bytes; else None."""
  if isinstance(error, OSError):
    return error.strerror if error.errno in _WRITE_ERRNOS else None
  message = str(getattr(error, "message", error))
  for code in _WRITE_ERRNOS:
    if os.strerror(code).lower() in message.lower():
      return os.strerror(code)
  return None


@contextlib.contextmanager
def refused_writes(path):
  """Turns a refused write (full disk, quota, read-only...) into a one-line DataError."""
  try:
    yield
  except (OSError, tf.errors.OpError) as e:
    reason = _write_failure(e)
    if reason is None:
      raise
    raise DataError(f"{path}: cannot write: {reason}; nothing was written") from None


def write_text_atomically(path, text):
  """Writes `text` to `path` under a temporary name, then renames it into place.

  Readers see the old file or the whole new one, never a partial one; the
  temporary file is removed when writing fails.
  """
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with refused_writes(path):
      with open(tmp, "w", newline="") as f:
        f.write(text)
      os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_file_bytes(path):
  """Returns the contents of `path`, or raises DataError when missing/empty."""
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found")
  if os.path.isdir(path):
    raise DataError(f"{path}: is a folder, expected a file")
  with open(path, "rb") as f:
    data = f.read()
  if not data:
    raise DataError(f"{path}: empty file")
  return data


def sha256_file(path, chunk_bytes=1 << 20):
  """SHA-256 hex digest of a file, read in chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(chunk_bytes), b""):
      digest.update(chunk)
  return digest.hexdigest()

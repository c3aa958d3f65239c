"""Errors that tfmnist reports to the user as a single line.

Command-line entry points catch these (and ValueError for bad settings),
print `<command>: error: <message>` and exit non-zero; libraries raise them
with a message that is complete on its own.
"""


class DataError(Exception):
  """Input data is missing, malformed or inconsistent.

  The message is complete on its own (it names the file, and the line for CSV)
  so that command-line tools can print it as one line and exit non-zero.
  """


class DownloadError(DataError):
  """A download failed; `reason` says why without the advice the message adds."""

  def __init__(self, reason, advice=""):
    super().__init__(f"{reason}; {advice}" if advice else reason)
    self.reason = reason


class NonFiniteLoss(RuntimeError):
  """The loss became NaN or infinite; the message names the step."""


class SaveError(RuntimeError):
  """A checkpoint could not be written (e.g. the disk is full); the message names it."""

"""Errors that tfmnist reports to the user as a single line."""


class DataError(Exception):
  """Input data is missing, malformed or inconsistent.

  The message is complete on its own (it names the file, and the line for CSV)
  so that command-line tools can print it as one line and exit non-zero.
  """

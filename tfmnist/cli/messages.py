"""Library messages in the words of a command line.

The libraries name their settings by field ("set label_column=last", "set
overwrite"), and each command's flags carry the same names; `as_flags`
rewrites the one into the other for the command that prints the message.
"""

import re

from absl import flags


def as_flags(message, flag_values=flags.FLAGS):
  """`message` with "set NAME=..." and "set NAME" written as the flags of that name.

  Only names that are flags of this command are rewritten; others stay as
  they are.
  """
  names = "|".join(re.escape(n) for n in sorted(flag_values, key=len, reverse=True))
  if not names:
    return message
  return re.sub(rf"\bset ({names})\b(=?)", r"pass --\1\2", message)

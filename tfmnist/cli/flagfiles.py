"""Command-line flags that a later --flagfile overrides.

absl applies arguments in order, so in `--epochs=5 --flagfile=best.flags`
the flagfile's --epochs wins. A flag meant to override a flagfile goes after
it; one before it that the file sets again is almost always a mistake, and
the commands say so.
"""


def _flag_name(arg, flag_values):
  """The flag an argument sets ("--noexport" sets export)."""
  name = arg.lstrip("-").split("=", 1)[0]
  if name not in flag_values and name.startswith("no") and name[2:] in flag_values:
    return name[2:]
  return name


def overridden(argv, flag_values):
  """One warning for each command-line flag that a later --flagfile sets to another value.

  Args:
    argv: the command line, program name first.
    flag_values: the defined flags (absl.flags.FLAGS): booleans take no separate value.

  Returns:
    Lines like "--seed=5 comes before --flagfile=F, which sets --seed=6; ...".
  """
  given = {}  # Flag name -> the command-line argument that last set it.
  warnings = []
  args = list(argv[1:])
  while args:
    arg = args.pop(0)
    if arg == "--" or not arg.startswith("-"):
      break
    name = _flag_name(arg, flag_values)
    if "=" not in arg and args and (name == "flagfile" or (
        name in flag_values and not flag_values[name].boolean)):
      arg += "=" + args.pop(0)  # The "--flag value" form.
    if name != "flagfile":
      given[name] = arg
      continue
    for line in flag_values.read_flags_from_files([arg]):  # Nested flagfiles expanded.
      earlier = given.pop(_flag_name(line, flag_values), None)
      if earlier and earlier != line:
        warnings.append(f"{earlier} comes before {arg}, which sets {line}; the later one wins "
                        "(give flags after the flagfile to override it)")
  return warnings

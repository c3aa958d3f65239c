"""The command lines: the only modules that read absl flags, print, or name a flag.

Each has `main(argv)` and `run()`; `python -m tfmnist.<command>` and the
console scripts in setup.cfg start them.
"""

"""`python -m tfmnist.serve`: the command line in tfmnist/cli/serve.py."""

from tfmnist.cli.serve import run

if __name__ == "__main__":
  run()

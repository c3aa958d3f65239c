"""Tests of the console progress bar (tfmnist.progress)."""

import io

from tfmnist import progress


def _lines(bar):
  return bar.stream.getvalue().splitlines()


def test_a_non_terminal_gets_a_line_per_tenth_and_the_last(monkeypatch):
  bar = progress.Progress(20, "images", desc="convert", stream=io.StringIO())
  for _ in range(20):
    bar.update(1, loss=0.25)
  lines = _lines(bar)
  assert len(lines) == 10
  assert lines[0].startswith("convert: [##") and " 2/20 ETA " in lines[0]
  assert lines[-1].startswith("convert: [" + "#" * 24 + "] 20/20 ")
  assert all(line.endswith(" loss=0.25") for line in lines)


def test_fast_work_shows_units_per_second_and_slow_work_seconds_per_unit(monkeypatch):
  clock = iter([0.0, 0.5, 0.0, 100.0])  # Start and update of the fast bar, then the slow.
  monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
  fast = progress.Progress(1000, "images", stream=io.StringIO())
  fast.update(1000)
  assert " 2,000 images/s" in _lines(fast)[0]
  slow = progress.Progress(2, "runs", stream=io.StringIO())
  slow.update(2)
  assert " 50 s/run" in _lines(slow)[0]


def test_disabled_bars_write_nothing():
  bar = progress.Progress(5, stream=io.StringIO(), enabled=False)
  bar.update(5)
  assert bar.stream.getvalue() == "" and bar.done == 5

"""A console progress bar for long work (downloads, conversion, epochs).

Draws in place on a terminal; when output is a log file it prints a line at
every tenth of the way instead, so CI logs stay short.
"""

import sys
import time


def _format_seconds(seconds):
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
  return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
  """Progress over `total` units, e.g. `Progress(70000, "images")`.

  Args:
    total: units of work in all (images, bytes, steps).
    unit: name of a unit, shown in the rate.
    desc: label printed before the bar.
    stream: where to draw; stderr by default.
    enabled: False makes every call a no-op.
  """

  def __init__(self, total, unit="it", desc="", stream=None, enabled=True, width=24):
    self.total = max(int(total), 1)
    self.unit, self.desc, self.width = unit, desc, width
    self.stream = stream or sys.stderr
    self.enabled = enabled
    self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
    self.done = 0
    self.start = time.perf_counter()
    self._last_draw = 0.0
    self._next_decile = 1

  def update(self, count=1, **values):
    """Advances by `count` units; `values` (e.g. loss=0.1) are shown after the bar."""
    self.done = min(self.done + count, self.total)
    if not self.enabled:
      return
    now = time.perf_counter()
    finished = self.done >= self.total
    if self.tty:
      if finished or now - self._last_draw >= 0.1:
        self._draw(now, values, end="\n" if finished else "")
    elif finished or self.done * 10 >= self._next_decile * self.total:
      self._next_decile = self.done * 10 // self.total + 1
      self._draw(now, values, end="\n")

  def _draw(self, now, values, end):
    self._last_draw = now
    elapsed = max(now - self.start, 1e-9)
    rate = self.done / elapsed
    filled = self.width * self.done // self.total
    bar = "#" * filled + "." * (self.width - filled)
    if self.done >= self.total:
      timing = f"{_format_seconds(elapsed)}"
    else:
      timing = f"ETA {_format_seconds((self.total - self.done) / max(rate, 1e-9))}"
    extra = "".join(f" {k}={v:.4g}" if isinstance(v, float) else f" {k}={v}"
                    for k, v in values.items())
    prefix = f"{self.desc}: " if self.desc else ""
    if rate >= 1:
      speed = f"{rate:,.0f} {self.unit}/s"
    else:  # Slow work (runs of minutes) reads better as seconds per unit.
      speed = f"{1 / max(rate, 1e-9):,.0f} s/{self.unit.rstrip('s')}"
    line = f"{prefix}[{bar}] {self.done}/{self.total} {timing} {speed}{extra}"
    self.stream.write(("\r" + line + "\x1b[K") if self.tty else line)
    self.stream.write(end)
    self.stream.flush()

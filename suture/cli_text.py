"""How the ``suture`` CLI prints: what runs, people and errors wrote is shown literally, and the
commands it suggests are safe to paste into a shell.

Run ids, agent and step names, questions and error messages are data. The console renders no rich
markup and no emoji codes (``[/bold]``, ``suture[prefect]`` and ``crunch_keyed:a:`` print as they
are); styles come from :class:`~rich.text.Text` objects, never from markup in a string. Message lines
are printed without inserted line breaks, so a long error or a suggested command stays one line.
"""

from __future__ import annotations

import shlex
from typing import Any

import click
from rich.console import Console
from rich.text import Text

#: every status a run can be listed with: what the library writes to a run (``running`` when it
#: starts; ``succeeded``, ``failed``, ``suspended``, ``interrupted``, ``cancelled``, ``retrying`` when an attempt
#: ends it; ``replay-check`` for a run kept by ``suture.testing``) and ``crashed`` (a run still
#: marked running whose holder is gone)
RUN_STATUSES = ("running", "succeeded", "failed", "suspended", "interrupted", "cancelled", "retrying", "crashed",
                "replay-check")

STATUS_STYLES = {"succeeded": "green", "failed": "red", "crashed": "red", "running": "yellow",
                 "retrying": "yellow", "suspended": "magenta", "interrupted": "magenta"}


def make_console(*, stderr: bool = False) -> Console:
    """A console that prints every string literally: no markup, no emoji codes, no highlighting."""
    return Console(markup=False, emoji=False, highlight=False, stderr=stderr)


def cell(value: Any, style: str = "") -> Text:
    """A table cell (or any text) shown exactly as ``value`` reads."""
    return Text("" if value is None else str(value), style=style)


def line(*parts: str | tuple[str, str]) -> Text:
    """One line from literal parts: a string, or ``(text, style)``."""
    return Text.assemble(*((str(p[0]), p[1]) if isinstance(p, tuple) else str(p) for p in parts))


def say(console: Console, *parts: str | tuple[str, str]) -> None:
    """Print one literal line, never broken by the console's width (a terminal wraps it, a pipe or
    a copy gets it whole)."""
    console.print(line(*parts), soft_wrap=True)


def command(*args: Any) -> str:
    """``suture ARGS...`` with every argument quoted for a POSIX shell: pasted, it runs as shown."""
    return " ".join(["suture", *(shlex.quote(str(a)) for a in args)])


def error(console: Console, exc: BaseException) -> None:
    """``error: <message>``: the whole message, literally, on one line (with its own newlines)."""
    say(console, ("error:", "red"), " ", str(exc))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class AgeParam(click.ParamType):
    """An age such as ``30d``, ``12h``, ``90m``, ``3600s`` or ``2w`` (a bare number: seconds), in seconds."""

    name = "AGE"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        unit = _UNITS.get(text[-1:], None)
        number = text[:-1] if unit is not None else text
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            self.fail(f"{value!r} is not an age: write a number and a unit, e.g. 30d, 12h, 90m, 3600s or 2w", param, ctx)
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"{value!r} is not an age: it must be a finite number of s/m/h/d/w, 0 or more", param, ctx)
        return seconds


def age_text(seconds: float) -> str:
    """``30d`` / ``12h`` / ``90m`` / ``45s``: an age as :class:`AgeParam` reads it."""
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"

"""A scripted repairer for tests and examples: answers the repair hook from a queue of fixes.

    repairer = ScriptedRepairer(["fixed code 1", lambda code, failure: code.replace("x", "y")])
    suture.register(repairer)

A model-backed repairer is a user plugin with the same hook (``suture_repair_code``): send
``failure.as_prompt()`` and the code to a model, return its code.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from ..manager import hookimpl


class ScriptedRepairer:
    """Returns the queued fixes in order (strings, or callables of ``(code, failure)``); then ``None``."""

    def __init__(self, fixes: list[str | Callable[[str, Any], str]]) -> None:
        self.fixes = deque(fixes)
        self.prompts: list[str] = []

    @hookimpl
    def suture_repair_code(self, code: str, execution: Any, failure: Any, round: int) -> str | None:
        self.prompts.append(failure.as_prompt())
        if not self.fixes:
            return None
        fix = self.fixes.popleft()
        return fix(code, failure) if callable(fix) else fix

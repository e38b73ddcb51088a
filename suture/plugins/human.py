"""Built-in human plugin: questions stay in the store for ``suture answer``; this says where."""

from __future__ import annotations

import logging
from typing import Any

from ..manager import hookimpl

from ..errors import command

log = logging.getLogger("suture.human")


@hookimpl(trylast=True)
def suture_deliver_question(question: Any) -> None:
    log.warning(
        "run %s asks: %s — answer with: %s --json '<answer>'",
        question.run_id, question.question, command("suture", "answer", question.run_id),
    )

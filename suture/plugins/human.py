"""Built-in human plugin: questions stay in the store for ``suture answer``; this says where."""

from __future__ import annotations

import logging
from typing import Any

from ..manager import hookimpl

log = logging.getLogger("suture.human")


@hookimpl(trylast=True)
def suture_deliver_question(question: Any) -> None:
    log.warning(
        "run %s asks: %s — answer with: suture answer %s --json '<answer>'",
        question.run_id, question.question, question.run_id,
    )

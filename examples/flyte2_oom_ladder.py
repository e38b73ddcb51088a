"""The OOM ladder of Flyte's own higher-order pattern, written with suture (Flyte 2 local mode, offline).

    python examples/flyte2_oom_ladder.py

flyte-sdk's ``examples/higher_order_patterns/oom_retrier.py`` climbs 250Mi → 450Mi → 650Mi → 850Mi
(+200Mi per try) with a hand-written loop around ``task.override(resources=...)`` and
``except flyte.errors.OOMError``. Every try starts the task from scratch, so every model call before
the out-of-memory point is paid again on every rung. Here the same task runs both ways:

- **by hand**: a loop like Flyte's pattern (what a user writes today, ~25 lines);
- **with suture**: ``@suture_flyte.agent`` under ``@env.task`` and one call of
  ``suture_flyte.run_with_escalation`` — the same ladder, the task's CPU kept on every rung, and the
  model calls made before the failure replayed from the journal.

Flyte's local mode enforces no memory limit, so the task itself checks the memory its try was
given and raises ``MemoryError`` below 850Mi, as a pod's OOM killer would stop it. A scripted model
on 127.0.0.1 (spoken to through the real ``openai`` client) counts the calls it is paid for.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("SUTURE_HOME", tempfile.mkdtemp(prefix="suture-oom-ladder-"))
os.environ.setdefault("FLYTE_LOCAL_CACHE_ENABLED", "false")

import flyte  # noqa: E402
import flyte.errors  # noqa: E402

import suture  # noqa: E402
from suture.adapters import flyte as suture_flyte  # noqa: E402
from suture.failures import parse_memory  # noqa: E402
from suture.testing import ScriptedModel  # noqa: E402

LADDER = ["250Mi", "450Mi", "650Mi", "850Mi"]
NEEDS = parse_memory("850Mi")
MODEL = ScriptedModel(default="summary of {prompt}")
env = flyte.TaskEnvironment(name="suture-oom-ladder", resources=flyte.Resources(cpu=2, memory="250Mi"))


def call_model(prompt: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=MODEL.base_url, api_key="scripted", max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    return reply.choices[0].message.content or ""


def crunch(summaries: list[str], memory: str | None) -> str:
    """The heavy part: needs 850Mi (checked against the try's memory: local mode enforces none)."""
    if memory is None or parse_memory(memory) < NEEDS:
        raise MemoryError(f"the embedding matrix needs 850Mi, the try got {memory}")
    return f"{len(summaries)} chapters embedded"


# -- by hand, in the manner of flyte-sdk's oom_retrier.py ------------------------------------------

@env.task
def by_hand(book: str, memory: str) -> str:
    summaries = [call_model(f"{book}, chapter {i}") for i in range(5)]  # paid again on every try
    try:
        return crunch(summaries, memory)
    except MemoryError as exc:
        raise flyte.errors.OOMError("OOMKilled", str(exc)) from exc


@env.task
async def by_hand_ladder(book: str) -> str:
    mem, step, top = 250, 200, 850
    while mem <= top:
        try:
            rung = f"{mem}Mi"
            return await by_hand.override(resources=flyte.Resources(cpu=2, memory=rung)).aio(book, rung)
        except flyte.errors.RuntimeUserError as exc:
            if "OOM" not in f"{getattr(exc, 'code', '')}":
                raise
            mem += step
    raise RuntimeError(f"out of memory up to {top}Mi")


# -- with suture -----------------------------------------------------------------------------------

@suture.step
def summarise(book: str, chapter: int) -> str:
    return call_model(f"{book}, chapter {chapter}")


@env.task
@suture_flyte.agent(max_attempts=len(LADDER))
def with_suture(book: str) -> str:
    summaries = [summarise(book, i) for i in range(5)]  # replayed on every try after the first
    return crunch(summaries, suture.current().resources.memory)


@env.task
async def with_suture_ladder(book: str) -> str:
    return await suture_flyte.run_with_escalation(with_suture, book, memory=LADDER)


def main() -> int:
    flyte.init()
    with MODEL:
        hand = flyte.run(by_hand_ladder, "moby dick").outputs()[0]
        paid_by_hand = MODEL.calls
        ours = flyte.run(with_suture_ladder, "moby dick").outputs()[0]
        paid_with_suture = MODEL.calls - paid_by_hand
    print(f"ladder {' -> '.join(LADDER)}, 5 model calls before the heavy part")
    print(f"by hand:     {hand!r}; model calls paid: {paid_by_hand}")
    print(f"with suture: {ours!r}; model calls paid: {paid_with_suture}")
    return 0 if (paid_by_hand, paid_with_suture) == (5 * len(LADDER), 5) else 1


if __name__ == "__main__":
    sys.exit(main())

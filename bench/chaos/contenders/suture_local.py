"""(g) suture local: ``@suture.agent(memory=[...])`` — each attempt a child process under suture's
own memory watchdog, an OOM kill rerun one rung up; the model call a journaled step (the openai
client's retries off: suture's policy retries 429s/500s/timeouts in place, honouring Retry-After),
the search a cached step, the analysis ``suture.sandbox.run_with_repair`` with a model-backed
repairer (a plugin), the memory-heavy step a step. After a death of the whole process the run is
restarted with the same run id (what ``suture resume RUN`` does)."""

from __future__ import annotations

import sys

import workload as w
from faults import crunch_mb
from supervisor import LADDER

import suture


@suture.step(name="chaos.ask")
def ask(cid: str, prompt: str) -> str:
    return w.raw_ask(cid, prompt, max_retries=0)


@suture.step(cache=True, version="1", name="chaos.search")
def search(query: str) -> list[str]:
    return w.raw_search(query)


@suture.step(name="chaos.crunch")
def crunch(mb: int) -> int:
    return w.raw_crunch(mb)


class Repairer:
    @suture.hookimpl
    def suture_repair_code(self, code, execution, failure, round):  # noqa: A002 - the hook's name
        error = execution.get("error") if isinstance(execution, dict) else getattr(execution, "error", None)
        text = str(error) if error else failure.as_prompt()
        return w.extract_code(w.raw_ask(w.REPAIR_CID, w.repair_prompt(code, text), max_retries=0))


suture.register(Repairer(), name="chaos-repairer")


class SutureOps:
    ask = staticmethod(ask)
    search = staticmethod(search)
    crunch = staticmethod(crunch)

    def analyse(self, code: str, notes: list[str]) -> dict:
        import json

        setup = f"open('notes.json', 'w').write({json.dumps(notes)!r})"
        r = suture.sandbox.run_with_repair(code, rounds=1, setup=setup, timeout=20)
        err = r.execution.error
        return {"ok": r.ok, "result": r.execution.result, "error": f"{err.name}: {err.value}" if err else None}


@suture.agent(name="chaos-research", memory=LADDER, max_attempts=6)
def research(seed: int) -> dict:
    return w.research(SutureOps(), seed, crunch_mb(seed))


def main(seed: int) -> int:
    w.finish(research.run(seed, run_id=f"chaos-{seed}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))

"""(a) Plain Python: the workload with no durability. The openai client's own retries (2, honouring
Retry-After) are its in-process best practice; a death or an escaped error exits non-zero and the
supervisor (a whole-task retry loop, what an orchestrator's retry alone gives) runs it again."""

from __future__ import annotations

import sys

import workload as w
from faults import code_fault, crunch_mb  # noqa: F401


class PlainOps:
    def ask(self, cid: str, prompt: str) -> str:
        return w.raw_ask(cid, prompt, max_retries=2)

    def search(self, query: str) -> list[str]:
        return w.raw_search(query)

    def analyse(self, code: str, notes: list[str]) -> dict:
        return w.analyse_with_repair(self.ask, w.sandbox_run, code, notes)

    def crunch(self, mb: int) -> int:
        return w.raw_crunch(mb)


def main(seed: int) -> int:
    w.finish(w.research(PlainOps(), seed, crunch_mb(seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))

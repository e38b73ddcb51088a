"""A code agent: it analyses a CSV by writing plain Python, and repairs its own mistakes.

    python examples/code_agent.py

The scripted model writes code for the local sandbox (bubblewrap when installed). Its first
attempt reads a column that does not exist (KeyError), its second has a typo (NameError); each
error comes back as a ``suture.Failure`` whose prompt the repairer (here: the scripted model) reads
to fix the code. Every round is a journaled step: run it again with the same run id and finished
rounds replay instead of executing.
"""

from __future__ import annotations

import os
import sys
import tempfile

import suture
from suture.sandbox import run_with_repair
from suture.sandbox.scripted import ScriptedRepairer

CSV = "region,month,revenue\nnorth,jan,120\nnorth,feb,80\nsouth,jan,200\nsouth,feb,260\n"
SETUP = f"open('sales.csv', 'w').write({CSV!r})"

FIRST_TRY = """import csv
rows = list(csv.DictReader(open('sales.csv')))
totals = {}
for r in rows:
    totals[r['region']] = totals.get(r['region'], 0) + int(r['sales'])
totals
"""


def fix_column(code: str, failure) -> str:  # the model read "KeyError: 'sales'" in the prompt
    return code.replace("r['sales']", "r['revenue']").replace("totals\n", "print(totls)\ntotals\n")


def fix_typo(code: str, failure) -> str:  # "NameError: name 'totls' is not defined"
    return code.replace("totls", "totals")


@suture.agent
def analyse_sales() -> dict:
    result = run_with_repair(FIRST_TRY, rounds=3, setup=SETUP)
    for r in result.rounds:
        ex = r["execution"]
        status = "ok" if ex["error"] is None else f"{ex['error']['name']}: {ex['error']['value']}"
        print(f"round {r['round']}: {status}")
    return {"ok": result.ok, "totals": result.execution.result, "isolation": result.execution.isolation}


def main() -> int:
    os.environ.setdefault("SUTURE_HOME", os.path.join(tempfile.gettempdir(), "suture-code-agent"))
    repairer = ScriptedRepairer([fix_column, fix_typo])
    suture.register(repairer)
    try:
        out = analyse_sales()
    finally:
        suture.unregister(repairer)
    print("the repairer was told, in round 1:\n  " + repairer.prompts[0].replace("\n", "\n  "))
    print(f"result: {out}")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

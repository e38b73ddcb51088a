"""The chaos benchmark's one workload: a research agent, written once, run by every contender.

~100 model calls through :class:`suture.testing.ScriptedModel` with the real ``openai`` client
(20 ms a call), 20 tool calls (a search, cacheable), one analysis written by the model as code and
run in suture's sandbox with one repair round, and one memory-heavy step that really allocates
(200 MB of touched bytes; 1,100 MB when the seed draws an OOM).

The workload is the generic function :func:`research`, written against an ``ops`` object with
``ask(cid, prompt)``, ``search(query)``, ``analyse(code, notes)`` and ``crunch(mb)``. Each contender
wraps the raw primitives below in its own durability (a suture step, a Prefect task, a
``flyte.trace``, nothing). The raw primitives are instrumented identically for everyone:

- the model server logs every completion it serves (``calls.log``: a JSON string per line, the
  prompt); the client appends ``{"done": cid}`` when a call has returned its answer to the agent.
  A serving that comes after a ``done`` of the same call is a *completed call paid twice*; any
  other extra serving was *in flight* (at a kill or a client timeout).
- **Tokens** are counted by the server's own rule (``ScriptedModel``'s ``usage``): ``len(text) // 4``
  of the prompt and of the answer, for every served completion (``tokens_of``).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Protocol

QUESTION = "why did enterprise churn rise in Q3?"
N_SUB = 32           # sub-questions: 3 model calls each
N_TOOLS = 20         # the first 20 sub-questions search first (cacheable tool calls)
CODE_CID, REPAIR_CID, FINAL_CID = "c097", "c098", "c099"
NORMAL_MB, OOM_MB = 200, 1100
LATENCY = 0.02       # seconds per model call
CLIENT_TIMEOUT = 1.0  # seconds: a read timeout past it (the server's ("sleep", s) fault)

GOOD_CODE = ("import json\nnotes = json.load(open('notes.json'))\n"
             "result = {'notes': len(notes), 'chars': sum(len(n) for n in notes)}\nresult")
BAD_CODE = GOOD_CODE.replace("sum(len(n) for n in notes)", "sum(len(n) for n in note_list)")  # NameError

_CID = re.compile(r"^\[(c\d{3})\]")


def cid_of(prompt: str) -> str | None:
    m = _CID.match(prompt)
    return m.group(1) if m else None


def answer_for(prompt: str, seed: int, code_fault: bool) -> str:
    """The scripted model's answer: deterministic in the prompt (and the seed's code fault)."""
    cid = cid_of(prompt) or "c---"
    if cid == CODE_CID:
        return "```python\n" + (BAD_CODE if code_fault else GOOD_CODE) + "\n```"
    if cid == REPAIR_CID:
        return "```python\n" + GOOD_CODE + "\n```"
    words = " ".join(f"fact{(seed * 131 + int(cid[1:]) * 7 + k) % 997}" for k in range(40))
    return f"{cid} finding: {words}"


def tokens_of(prompt: str, answer: str) -> int:
    return len(prompt) // 4 + len(answer) // 4


def extract_code(text: str) -> str:
    m = re.search(r"```python\n(.*?)```", text, re.S)
    return (m.group(1) if m else text).strip()


def repair_prompt(code: str, error: str) -> str:
    return f"[{REPAIR_CID}] fix this code; it failed with: {error[-300:]}\n```python\n{code}\n```"


# -- the raw primitives (instrumented the same way for every contender) --------------------------
def run_dir() -> Path:
    return Path(os.environ["CHAOS_RUN_DIR"])


def _append(name: str, obj: Any) -> None:
    with open(run_dir() / name, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj) + "\n")


_client = None


def client(max_retries: int):
    global _client
    if _client is None:
        import openai

        _client = openai.OpenAI(base_url=os.environ["CHAOS_BASE_URL"], api_key="scripted",
                                timeout=CLIENT_TIMEOUT, max_retries=max_retries)
    return _client


def raw_ask(cid: str, prompt: str, *, max_retries: int = 2) -> str:
    """One chat completion. ``max_retries``: the openai client's own retries (429/500/timeouts,
    honouring Retry-After); suture's contenders pass 0 and let suture's policy retry."""
    from faults import after_answer, before_call

    before_call(cid)
    reply = client(max_retries).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": prompt}])
    after_answer(cid)
    _append("calls.log", {"done": cid})
    return reply.choices[0].message.content or ""


def raw_search(query: str) -> list[str]:
    """A tool: 10 ms, three sources. Every execution is logged (``tools.log``)."""
    time.sleep(0.01)
    _append("tools.log", query)
    return [f"source {k} on {query}" for k in range(3)]


def raw_crunch(mb: int) -> int:
    """The memory-heavy step: allocates ``mb`` MB with every page touched, returns a checksum."""
    from faults import before_crunch

    before_crunch()
    chunks, total = [], 0
    for i in range(mb // 8):
        b = bytearray(8 << 20)
        b[::4096] = bytes([i % 251 + 1]) * len(range(0, 8 << 20, 4096))
        chunks.append(b)
        total += b[4096]
    _append("tools.log", f"crunch {mb}")
    return total


def sandbox_run(code: str, notes: list[str]) -> dict[str, Any]:
    """Run the generated code in suture's sandbox (the strongest tier this host has): the code is
    data, so every contender uses the same executor. Returns ``{"ok", "result", "error"}``."""
    import suture

    with suture.sandbox.open(timeout=20) as box:
        box.write_file("notes.json", json.dumps(notes))
        ex = box.run(code)
    _append("tools.log", "sandbox")
    err = f"{ex.error.name}: {ex.error.value}" if ex.error else None
    return {"ok": ex.error is None, "result": ex.result, "error": err, "isolation": str(ex.isolation)[:40]}


def analyse_with_repair(ask, run, code: str, notes: list[str]) -> dict[str, Any]:
    """The repair loop the peers write by hand: run; on error ask the model once; run again.
    ``ask``/``run`` are the contender's (durable or not) model call and sandbox run."""
    out = run(code, notes)
    if not out["ok"]:
        fixed = extract_code(ask(REPAIR_CID, repair_prompt(code, out["error"] or "")))
        out = run(fixed, notes)
    return out


class Ops(Protocol):
    def ask(self, cid: str, prompt: str) -> str: ...
    def search(self, query: str) -> list[str]: ...
    def analyse(self, code: str, notes: list[str]) -> dict[str, Any]: ...
    def crunch(self, mb: int) -> int: ...


def research(ops: Ops, seed: int, crunch_mb: int) -> dict[str, Any]:
    """The agent: plan, 32 x (search?, research, critique, note), code, analysis, crunch, answer."""
    plan = ops.ask("c000", f"[c000] plan {N_SUB} sub-questions for: {QUESTION} (case {seed})")
    notes: list[str] = []
    for i in range(N_SUB):
        c = 1 + 3 * i
        sources = ops.search(f"{QUESTION} / aspect {i}") if i < N_TOOLS else []
        finding = ops.ask(f"c{c:03d}", f"[c{c:03d}] research aspect {i} of the plan {plan[:60]}; sources {sources[:1]}")
        critique = ops.ask(f"c{c + 1:03d}", f"[c{c + 1:03d}] critique finding {i}: {finding[:80]}")
        notes.append(ops.ask(f"c{c + 2:03d}", f"[c{c + 2:03d}] write note {i} from: {critique[:80]}"))
    code = extract_code(ops.ask(CODE_CID, f"[{CODE_CID}] write python that summarises notes.json"))
    analysis = ops.analyse(code, notes)
    checksum = ops.crunch(crunch_mb)
    final = ops.ask(FINAL_CID, f"[{FINAL_CID}] final answer from {len(notes)} notes, analysis {analysis.get('result')}")
    return {"answer": final[:60], "analysis_ok": bool(analysis.get("ok")), "checksum": checksum}


def finish(result: dict[str, Any]) -> None:
    """Record a finished run (the supervisor's proof of success)."""
    (run_dir() / "result.json").write_text(json.dumps(result))


def dbos_main(workflow: Any, seed: int) -> int:
    """Run ``workflow(seed)`` under workflow id ``chaos-<seed>`` as DBOS's docs say for a restart after a
    death: ``DBOS.launch()`` recovers this executor's pending workflow, whose result is then awaited by
    id; a first attempt starts it under that id. (The DBOS contenders, (e) and (f), share this.)"""
    from dbos import DBOS, SetWorkflowID

    wfid = f"chaos-{seed}"
    DBOS.launch()  # recovers this executor's pending workflows (a dead attempt's)
    if DBOS.get_workflow_status(wfid) is not None:
        out = DBOS.retrieve_workflow(wfid).get_result()
    else:
        with SetWorkflowID(wfid):
            out = workflow(seed)
    finish(out)
    DBOS.destroy()
    return 0


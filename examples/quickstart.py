"""suture quick start: an agent dies midway, and its re-run pays for nothing twice.

    python examples/quickstart.py            # offline: a scripted model on 127.0.0.1
    python examples/quickstart.py --live     # the real provider (needs OPENAI_API_KEY)

A research agent makes ~30 model calls through the real ``openai`` client. The first attempt runs
in a child process that is SIGKILLed after 14 calls (a real process death, like an OOM kill or a
lost spot node). The same run id is then resumed: the completed calls replay from the journal,
only the rest reach the model. Then try ``suture show <run id>``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import suture

QUESTIONS = 9  # 1 plan + 9 x (research + critique) + 9 x note + 1 final = ~30 calls


@suture.step
def ask_model(prompt: str) -> str:
    """One chat completion. Journaled: within a run it is never paid for twice."""
    from openai import OpenAI

    client = OpenAI(base_url=os.environ.get("QUICKSTART_BASE_URL"), api_key=os.environ.get("OPENAI_API_KEY", "scripted"),
                    max_retries=0)
    reply = client.chat.completions.create(
        model=os.environ.get("QUICKSTART_MODEL", "gpt-4o-mini"),
        messages=[{"role": "user", "content": prompt}],
    )
    _maybe_die()
    return reply.choices[0].message.content or ""


_calls = 0


def _maybe_die() -> None:
    """The crash: after N completed calls this process is killed, as an OOM killer would."""
    global _calls
    _calls += 1
    die_after = int(os.environ.get("QUICKSTART_DIE_AFTER", "0"))
    if die_after and _calls > die_after:
        os.kill(os.getpid(), signal.SIGKILL)


@suture.agent
def research(question: str) -> str:
    plan = ask_model(f"plan {QUESTIONS} sub-questions for: {question}")
    notes = []
    for i in range(QUESTIONS):
        finding = ask_model(f"research sub-question {i + 1} of: {question}\nplan: {plan[:200]}")
        critique = ask_model(f"critique finding {i + 1}: {finding[:200]}")
        notes.append(ask_model(f"write a note from finding {i + 1} and its critique: {critique[:200]}"))
    return ask_model("write the final answer from these notes:\n" + "\n".join(n[:80] for n in notes))


def _attempt_stats(run_id: str) -> list[dict]:
    from suture.config import get_store

    return [a.stats for a in get_store().list_attempts(run_id)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", action="store_true", help="use the real provider (OPENAI_API_KEY)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", default=None, help="run id (default: a new one)")
    parser.add_argument("--die-after", type=int, default=14, help="model calls before the first process dies")
    args = parser.parse_args()
    question = "why did churn rise in Q3?"

    if args.child:  # the first attempt, in a process that will die
        research.run(question, run_id=args.run_id)
        return 0

    os.environ.setdefault("SUTURE_HOME", os.path.join(tempfile.gettempdir(), "suture-quickstart"))
    run_id = args.run_id or f"quickstart-{time.strftime('%H%M%S')}-{os.getpid()}"
    model = None
    if args.live:
        if not os.environ.get("OPENAI_API_KEY"):
            parser.error("--live needs OPENAI_API_KEY")
        os.environ.pop("QUICKSTART_BASE_URL", None)
    else:
        from suture.testing import ScriptedModel

        model = ScriptedModel(default="finding about: {prompt}", latency=0.03).start()
        os.environ["QUICKSTART_BASE_URL"] = model.base_url

    print(f"run {run_id}: store {os.environ['SUTURE_HOME']}/suture.db")
    print(f"1) first attempt in a child process, SIGKILLed after {args.die_after} model calls ...")
    child = subprocess.run(
        [sys.executable, __file__, "--child", "--run-id", run_id],
        env={**os.environ, "QUICKSTART_DIE_AFTER": str(args.die_after)},
    )
    died = -child.returncode if child.returncode < 0 else None
    first_calls = model.calls if model else args.die_after
    print(f"   child exited with {'signal ' + signal.Signals(died).name if died else child.returncode} "
          f"after making {first_calls} model calls")

    print("2) resuming the same run id in this process ...")
    t0 = time.perf_counter()
    answer = research.run(question, run_id=run_id)
    elapsed = time.perf_counter() - t0
    last = _attempt_stats(run_id)[-1]
    made = (model.calls - first_calls) if model else last.get("live", 0)
    replayed = last.get("replayed", 0)
    in_flight = first_calls - replayed
    print(f"   answer: {' '.join(answer.split())[:70]}...")
    print(f"   model calls replayed from the journal: {replayed}")
    print(f"   model calls made on resume:             {made} (incl. {in_flight} in flight when the child died)")
    print(f"   model calls saved:                      {replayed} "
          f"(~{last.get('saved_seconds', 0):.2f}s of model time), resumed in {elapsed:.2f}s")
    total = first_calls + made
    print(f"   total model calls for the whole run:     {total} (a run without suture would pay "
          f"{first_calls + replayed + made})")
    print(f"\nsee the timeline: SUTURE_HOME={os.environ['SUTURE_HOME']} suture show {run_id}")
    if model:
        model.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

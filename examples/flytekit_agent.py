"""A flytekit task that heals itself, driven locally the way a Flyte cluster drives it.

    python examples/flytekit_agent.py

Offline: a scripted model on 127.0.0.1 (spoken to through the real ``openai`` client) stands in
for the provider and counts the calls it is paid for.

1. Retries. flytekit's local runs neither retry nor pass checkpoints, so the task runs through
   flytekit's container entrypoint (``pyflyte-execute``) as a cluster runs it: attempt 0 fails
   after its model calls (a recoverable error: Flyte would retry), attempt 1 starts on a "new pod"
   (an empty store) with the previous checkpoint and replays every completed call from it.
2. Escalation. An ``@eager`` supervisor re-runs a memory-hungry task through ``with_overrides``
   one rung up the ladder (256Mi → 512Mi → 1Gi); nothing enforces memory locally, so the task
   fails twice by script, and its first step replays on each try.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("FLYTE_LOCAL_CACHE_ENABLED", "false")
os.environ.setdefault("SUTURE_STORE_URL", f"sqlite:///{tempfile.mkdtemp(prefix='suture-flytekit-')}/suture.db")

from flytekit import eager, task  # noqa: E402

import suture  # noqa: E402
from suture.adapters import flytekit as suture_flytekit  # noqa: E402

WORK = Path(os.environ.get("EXAMPLE_DIR") or tempfile.mkdtemp(prefix="suture-flytekit-"))
hungry_tries = {"left": 2}


@suture.step
def ask_model(prompt: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=os.environ["EXAMPLE_MODEL_URL"], api_key="scripted", max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    return reply.choices[0].message.content or ""


@task(retries=2, enable_deck=True)
@suture_flytekit.agent
def crunch() -> str:
    notes = [ask_model(f"angle {i}") for i in range(5)]
    if os.environ.get("FLYTE_ATTEMPT_NUMBER") == "0":
        raise ConnectionError("the warehouse dropped the connection")  # retried by Flyte
    return " | ".join(notes)


@task
@suture_flytekit.agent
def join_tables(name: str) -> str:
    plan = ask_model(f"plan the join of {name}")
    if hungry_tries["left"]:
        hungry_tries["left"] -= 1
        raise MemoryError("the join does not fit")  # on a cluster: OOMKilled
    return f"{plan}: joined"


@eager
async def supervisor(name: str) -> str:
    requested: list[str] = []
    out = await suture_flytekit.run_with_escalation(join_tables, memory=["256Mi", "512Mi", "1Gi"],
                                                    requested=requested, name=name)
    return f"{out} (memory per try: {' → '.join(requested)})"


def attempt(n: int, prev: Path | None) -> None:
    from flytekit.models.literals import LiteralMap

    inputs = WORK / "inputs.pb"
    inputs.write_bytes(LiteralMap({}).to_flyte_idl().SerializeToString())
    env = dict(os.environ, EXAMPLE_DIR=str(WORK), FLYTE_ATTEMPT_NUMBER=str(n), FLYTE_INTERNAL_EXECUTION_ID="demo",
               FLYTE_INTERNAL_EXECUTION_PROJECT="example", FLYTE_INTERNAL_EXECUTION_DOMAIN="dev",
               SUTURE_STORE_URL=f"sqlite:///{WORK}/pod-{n}.db",  # every attempt on a fresh pod
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    entrypoint = [sys.executable, "-c", "from flytekit.bin.entrypoint import execute_task_cmd; execute_task_cmd()"]
    subprocess.run([*entrypoint, "--inputs", str(inputs), "--output-prefix", str(WORK / f"out{n}"),
                    "--raw-output-data-prefix", str(WORK / "raw"), "--checkpoint-path", str(WORK / f"cp{n}"),
                    "--prev-checkpoint", str(prev) if prev else '""',
                    "--resolver", "flytekit.core.python_auto_container.default_task_resolver", "--",
                    "task-module", "flytekit_agent", "task-name", "crunch"], env=env, check=True,
                   capture_output=True)


def main() -> int:
    from suture.testing import ScriptedModel, count_lines

    paid = WORK / "paid.log"
    with ScriptedModel(default="finding about {prompt}", count_file=paid) as model:
        os.environ["EXAMPLE_MODEL_URL"] = model.base_url
        attempt(0, None)
        print(f"attempt 0 failed after {count_lines(paid)} model calls "
              f"(recoverable error document: {(WORK / 'out0' / 'error.pb').exists()})")
        attempt(1, WORK / "cp0")
        print(f"attempt 1 on a new pod finished: {(WORK / 'out1' / 'outputs.pb').exists()}; "
              f"model calls paid in all: {count_lines(paid)} (5 distinct)")
        print(f"deck: {next((WORK / 'out1').rglob('deck.html'), 'none')}")
        before = count_lines(paid)
        print("escalation:", asyncio.run(supervisor(name="sales")))
        print(f"model calls paid by the escalation: {count_lines(paid) - before} over 3 tries")
    return 0


if __name__ == "__main__":
    sys.exit(main())

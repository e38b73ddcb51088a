"""A flytekit task that heals itself, driven locally the way a Flyte cluster drives it.

    python examples/flytekit_agent.py

flytekit's local runs neither retry nor pass checkpoints, so this example runs the task through
flytekit's container entrypoint (pyflyte-execute) twice, as a cluster would: attempt 0 fails after
its model calls, attempt 1 starts on a "new pod" (an empty local store) with the previous
checkpoint, and replays every completed call from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from flytekit import task

import suture
from suture.adapters import flytekit as suture_flytekit

WORK = Path(os.environ.get("EXAMPLE_DIR") or tempfile.mkdtemp(prefix="suture-flytekit-"))


@suture.step
def ask_model(prompt: str) -> str:
    with open(WORK / "paid.log", "a") as fh:  # a scripted model: every paid call is logged
        fh.write(prompt + "\n")
    return f"finding about {prompt}"


@task(retries=2, enable_deck=True)
@suture_flytekit.agent
def crunch() -> str:
    notes = [ask_model(f"angle {i}") for i in range(5)]
    if os.environ.get("FLYTE_ATTEMPT_NUMBER") == "0":
        raise ConnectionError("the warehouse dropped the connection")  # retried by Flyte
    return " | ".join(notes)


def attempt(n: int, prev: Path | None) -> None:
    from flytekit.models.literals import LiteralMap

    inputs = WORK / "inputs.pb"
    inputs.write_bytes(LiteralMap({}).to_flyte_idl().SerializeToString())
    env = dict(os.environ, EXAMPLE_DIR=str(WORK), FLYTE_ATTEMPT_NUMBER=str(n), FLYTE_INTERNAL_EXECUTION_ID="demo",
               FLYTE_INTERNAL_EXECUTION_PROJECT="example", FLYTE_INTERNAL_EXECUTION_DOMAIN="dev",
               FLYTE_LOCAL_CACHE_ENABLED="false", SUTURE_STORE_URL=f"sqlite:///{WORK}/pod-{n}.db",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    entrypoint = [sys.executable, "-c", "from flytekit.bin.entrypoint import execute_task_cmd; execute_task_cmd()"]
    subprocess.run([*entrypoint, "--inputs", str(inputs), "--output-prefix", str(WORK / f"out{n}"),
                    "--raw-output-data-prefix", str(WORK / "raw"), "--checkpoint-path", str(WORK / f"cp{n}"),
                    "--prev-checkpoint", str(prev) if prev else '""',
                    "--resolver", "flytekit.core.python_auto_container.default_task_resolver", "--",
                    "task-module", "flytekit_agent", "task-name", "crunch"], env=env, check=True,
                   capture_output=True)


def main() -> int:
    attempt(0, None)
    print(f"attempt 0 failed after {len((WORK / 'paid.log').read_text().splitlines())} model calls "
          f"(error document: {(WORK / 'out0' / 'error.pb').exists()})")
    attempt(1, WORK / "cp0")
    total = len((WORK / "paid.log").read_text().splitlines())
    print(f"attempt 1 on a new pod finished: {(WORK / 'out1' / 'outputs.pb').exists()}; "
          f"model calls paid in all: {total} (5 distinct)")
    print(f"deck: {next((WORK / 'out1').rglob('deck.html'), 'none')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A flow served by a Prefect runner; each step appends to $STEP_LOG, the flow writes its pid."""

import os
import time

from prefect import flow

import suture
from suture.adapters import prefect as sp


@suture.step(name="work")
def work(i: int) -> int:
    time.sleep(0.4)
    with open(os.environ["STEP_LOG"], "a") as fh:
        fh.write(f"{i}\n")
    return i * i


@flow(name="served-research", persist_result=False)
@sp.agent
def served_research(n: int) -> int:
    with open(os.environ["STEP_LOG"] + ".pid", "w") as fh:
        fh.write(str(os.getpid()))
    return sum(work(i) for i in range(n))


if __name__ == "__main__":
    served_research.serve(name="served")

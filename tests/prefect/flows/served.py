"""A flow served by a Prefect runner; each step appends to $STEP_LOG, the flow writes its pid."""

import os
import time

from prefect import flow
from pydantic import BaseModel

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


class Budget(BaseModel):
    approve: bool
    amount: int = 0


@suture.step(name="draft")
def draft(topic: str) -> str:
    with open(os.environ["STEP_LOG"], "a") as fh:
        fh.write("draft\n")
    return f"plan for {topic}"


@flow(name="suspending-approval", persist_result=True)
@sp.agent(wait_for_answer="suspend")
def suspending_approval(topic: str) -> dict:
    plan = draft(topic)
    answer = suture.ask(f"approve {plan}?", schema=Budget)
    return {"plan": plan, "approve": answer.approve, "amount": answer.amount}


@flow(name="suspending-approval-async", persist_result=True)
@sp.agent(wait_for_answer="suspend")
async def suspending_approval_async(topic: str) -> dict:
    plan = draft(topic)
    answer = suture.ask(f"approve {plan}?", schema=Budget)
    return {"plan": plan, "approve": answer.approve, "amount": answer.amount}


if __name__ == "__main__":
    from prefect import serve

    serve(served_research.to_deployment(name="served"), suspending_approval.to_deployment(name="served"),
          suspending_approval_async.to_deployment(name="served"))

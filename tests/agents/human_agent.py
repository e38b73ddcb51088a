"""An agent that asks a person to approve a plan; exits 75 while the question is pending."""

import json
import os
import sys

from pydantic import BaseModel

import suture


class Approval(BaseModel):
    approve: bool
    budget: int = 0


@suture.step(name="plan")
def plan(topic: str) -> str:
    with open(os.environ["HUMAN_LOG"], "a") as fh:
        fh.write("plan\n")
    return f"plan for {topic}"


@suture.agent(name="human-agent")
def agent(topic: str) -> dict:
    p = plan(topic)
    answer = suture.ask(f"approve {p!r}?", schema=Approval)
    return {"plan": p, "approved": answer.approve, "budget": answer.budget}


if __name__ == "__main__":
    try:
        print(json.dumps(agent.run(sys.argv[2], run_id=sys.argv[1])))
    except suture.Suspended as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(exc.exit_code)

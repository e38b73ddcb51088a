"""A 200-step agent for crash tests: each step appends to a log before returning.

    python long_agent.py RUN_ID LOG_FILE [STEPS] [KILL_AT]

With KILL_AT set, the process SIGKILLs itself inside step KILL_AT (after the work, before the
step returns: the in-flight step). Prints the result as JSON on success.
"""

import json
import os
import signal
import sys

import suture

RUN_ID, LOG = sys.argv[1], sys.argv[2]
STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 200
KILL_AT = int(sys.argv[4]) if len(sys.argv) > 4 else -1


@suture.step(name="work")
def work(i: int) -> int:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{i}\n".encode())
    os.close(fd)
    if i == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return (i * 7919) % 1000


@suture.agent(name="long")
def long_agent(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total * 31 + work(i)) % 1_000_003
    return total


if __name__ == "__main__":
    print(json.dumps(long_agent.run(STEPS, run_id=RUN_ID)))

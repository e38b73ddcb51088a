"""Five fast steps, then a slow one, under durability="batch": ``python batch_agent.py RUN LOG``.

Each step appends its name to LOG while it runs; the slow step writes ``LOG.slow`` when it starts.
"""

import sys
import time

import suture

RUN_ID, LOG = sys.argv[1], sys.argv[2]


@suture.step
def fast(i: int) -> int:
    with open(LOG, "a") as fh:
        fh.write(f"fast {i}\n")
    return i


@suture.step
def slow() -> int:
    open(LOG + ".slow", "w").close()
    time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
    with open(LOG, "a") as fh:
        fh.write("slow\n")
    return 100


@suture.agent(durability="batch")
def batched() -> int:
    return sum(fast(i) for i in range(5)) + slow()


if __name__ == "__main__":
    print(batched.run(run_id=RUN_ID))

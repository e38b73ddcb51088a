"""Two processes share the global cache: prints how many times the expensive step ran here."""

import json
import sys

import suture

ran = []


@suture.step(cache=True, version="1", name="expensive")
def expensive(x: int) -> int:
    ran.append(x)
    return x * x


@suture.agent(name="cached")
def agent(n: int) -> int:
    return sum(expensive(i) for i in range(n))


if __name__ == "__main__":
    result = agent.run(int(sys.argv[2]), run_id=sys.argv[1])
    print(json.dumps({"result": result, "ran": len(ran)}))

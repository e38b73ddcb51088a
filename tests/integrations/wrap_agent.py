"""An agent calling a wrapped openai client three times; dies after the second reply when told to."""

import os
import sys

import openai

import suture

client = suture.wrap(openai.OpenAI(base_url=os.environ["MODEL_URL"], api_key="scripted"))


@suture.agent
def research(topic: str) -> list[str]:
    out = []
    for i in range(3):
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"{topic} {i}"}])
        out.append(reply.choices[0].message.content)
        if i == 1 and os.environ.get("DIE_AFTER_SECOND") and not os.path.exists(os.environ["DIE_AFTER_SECOND"]):
            open(os.environ["DIE_AFTER_SECOND"], "w").close()
            os._exit(9)
    return out


if __name__ == "__main__":
    print("|".join(research.run(sys.argv[1], run_id=sys.argv[2])))

"""Asking a person: durable suspension.

``suture.ask(question, schema=Model)`` the first time stores the question and suspends the run
(:class:`Suspended`; a local run's process exits with status 75). ``suture answer RUN --json ...``
validates and records the answer; the next attempt replays to the question and continues with it.
Adapters may answer differently (Prefect pauses the flow run): they set ``run.asker``.
"""

from __future__ import annotations

import importlib
import json
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import SutureError, Suspended, command
from .fingerprint import digest
from .models import Question


def schema_of(schema: Any) -> dict[str, Any]:
    """The JSON schema a question is stored with (a model's, tagged with its import path; or a string)."""
    if schema is None:
        return {"type": "string"}
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        from .identity import is_synthetic, module_of

        out = schema.model_json_schema()
        # the import path, the same whether the script runs as __main__ or under `suture resume`
        out["x-suture-model"] = f"{module_of(schema)}:{schema.__qualname__}"
        if is_synthetic(schema.__module__):
            out["x-suture-script"] = True  # defined in a script: the CLI checks the schema, never imports it
        return out
    raise TypeError("suture.ask(schema=...) takes a pydantic model class (or None for a free-text answer)")


def validate_answer(schema: Any, answer: Any) -> Any:
    """Validate ``answer`` against a model class or a stored JSON schema; raise ValueError."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_validate(answer)
    if schema is None:
        if not isinstance(answer, str):
            raise ValueError(f"this question takes a free-text answer (a JSON string), got {type(answer).__name__}")
        return answer
    # a stored JSON schema (the CLI has no model class): use the model if importable, else check it
    model_path = schema.get("x-suture-model") if isinstance(schema, dict) else None
    if model_path:
        module, _, qual = model_path.partition(":")
        if module != "__main__" and not schema.get("x-suture-script"):
            try:
                obj: Any = importlib.import_module(module)
                for part in qual.split("."):
                    obj = getattr(obj, part)
                obj.model_validate(answer)
                return answer
            except (ImportError, AttributeError):
                pass
            except ValidationError as exc:
                raise ValueError(str(exc)) from None
    problems = _check(schema, answer, "answer", schema)
    if problems:
        raise ValueError("; ".join(problems))
    return answer


_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def _check(schema: dict, value: Any, where: str, root: dict) -> list[str]:
    """A small JSON-schema check (types, required, enum, nested $ref) for the CLI."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root.get("$defs", {}).get(name, {})
    if "anyOf" in schema:
        options = [_check(s, value, where, root) for s in schema["anyOf"]]
        return [] if any(not o for o in options) else options[0]
    problems: list[str] = []
    t = schema.get("type")
    if t in _TYPES:
        ok = isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return [f"{where}: expected {t}, got {type(value).__name__} {value!r}"]
    elif t == "null" and value is not None:
        return [f"{where}: expected null"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if t == "object" and isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where}.{name}: field required")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                problems += _check(sub, value[name], f"{where}.{name}", root)
    if t == "array" and isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += _check(schema["items"], item, f"{where}[{i}]", root)
    return problems


def ask(question: str, schema: Any = None, *, key: str | None = None) -> Any:
    """Ask a person ``question``; return the answer validated against ``schema``.

    Inside a run only. The first time the run reaches the question it is stored (and delivered by
    ``suture_deliver_question`` plugins) and the run suspends; once answered, the next attempt
    replays to this point and gets the answer. ``key`` names the question (default: its position).
    """
    from .context import frame_var

    frame = frame_var.get()
    if frame is None:
        raise SutureError("suture.ask() suspends a run until a person answers, so it needs a run: call it "
                          "from a @suture.agent function")
    run = frame.run
    idx = ("k:" + key) if key else frame.take_index("suture.ask")
    qid = key or (f"{frame.path}/ask#{idx}" if frame.path else f"ask#{idx}")
    fp = question_fingerprint(question, schema)
    rec = run.journal.get((frame.path, "suture.ask", idx))
    if rec is not None and (rec[1] == fp or (run.legacy and rec[1] == digest(question))):
        run.count_replay(frame, "suture.ask", idx)
        return _decode(schema, rec[2])
    if rec is not None:  # the question asked here changed: its recorded answer belongs to the old one
        _question_changed(run, frame, idx, qid, rec, fp, question)
    asker = run.asker
    if asker is not None:  # an adapter answers (e.g. Prefect's pause_flow_run)
        answer = asker(question, schema, qid)
    else:
        answer = _answer_from_store(run, question, schema, qid)
    value = validate_answer(schema, answer)
    data = value.model_dump_json() if isinstance(value, BaseModel) else json.dumps(value)
    run.record((frame.path, "suture.ask", idx, 0, fp, "ask", "human", data, "json", time.time(), 0.0, run.attempt))
    run.stats.live += 1
    return value


def question_fingerprint(question: str, schema: Any) -> str:
    """What an answer is bound to: the question's text and (for a model) its schema."""
    if schema is None:
        return digest(question)
    return digest(question + "\x1f" + json.dumps(schema_of(schema), sort_keys=True, separators=(",", ":")))


def _question_changed(run: Any, frame: Any, idx: str, qid: str, rec: tuple, fp: str, question: str) -> None:
    """A divergence at a question: report it; strict raises; else the old answer is dropped."""
    from .errors import DivergenceError
    from .manager import hook

    call = run.call_info(frame, "suture.ask", idx)
    if run.strict:
        run.event("divergence", {"step": "suture.ask", "qid": qid, "path": frame.path, "index": idx,
                                 "recorded": rec[1], "current": fp, "dropped": 0, "strict": True,
                                 "reason": "question changed"})
        raise DivergenceError(
            f"run {run.run_id!r} asks {question!r} at {qid!r}, where an earlier attempt asked another question "
            f"(or with another answer schema) and recorded its answer. That answer is not used for this "
            f"question. Strict mode stops here; without strict=True the new question is asked and the run "
            f"waits for its answer.",
            step="suture.ask", key=f"{frame.path}:suture.ask:{idx}", recorded=rec[1], current=fp,
        )
    dropped = run.drop_after(frame.path, rec[0])
    run.stats.diverged += 1
    run.event("divergence", {"step": "suture.ask", "qid": qid, "path": frame.path, "index": idx,
                             "recorded": rec[1], "current": fp, "dropped": dropped, "reason": "question changed"})
    hook().suture_divergence(run=run.info, call=call, recorded=rec[1], current=fp, dropped=dropped)


def _decode(schema: Any, data: Any) -> Any:
    text = data if isinstance(data, str) else data.decode()
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_validate_json(text)
    return json.loads(text)


def _answer_from_store(run: Any, question: str, schema: Any, qid: str) -> Any:
    from .manager import hook

    store = run.store
    stored = store.question_get(run.run_id, qid)
    if stored is not None and (stored.question != question or stored.schema_ != schema_of(schema)):
        stored = None  # another question was asked here before: its answer is not this one's
    if stored is not None and stored.status == "answered":
        return stored.answer
    q = stored or Question(run_id=run.run_id, qid=qid, question=question, schema=schema_of(schema),
                           created_at=time.time())
    fetched = hook().suture_fetch_answer(question=q)
    if fetched is not None:
        return fetched
    if stored is None:
        run.flush()
        store.question_put(q)
        hook().suture_deliver_question(question=q)
    run.event("suspend", {"qid": qid, "question": question})
    hook().suture_suspend(run=run.info, question=q)
    raise Suspended(
        f"run {run.run_id!r} is waiting for a person to answer {question!r}. Answer with "
        f"`{command('suture', 'answer', run.run_id)} --json '...'` (see `suture runs --waiting`), then resume it "
        f"(`{command('suture', 'resume', run.run_id)}` or call the agent's .run(..., run_id={run.run_id!r})).",
        run_id=run.run_id,
        question_id=qid,
    )

"""Model usage (tokens) recorded on steps: what a run paid, and what replay and the cache saved.

A step that calls a model says what the call used::

    @suture.step
    def summarize(text: str) -> str:
        reply = client.chat.completions.create(model="gpt-4o", messages=[...])
        suture.record_usage(model="gpt-4o", input_tokens=reply.usage.prompt_tokens,
                            output_tokens=reply.usage.completion_tokens, provider="openai")
        return reply.choices[0].message.content

``suture.wrap(client)`` and the framework integrations do this for every model call they journal.

- **Paid** when recorded: by a live call, in the attempt that made it (a try that failed after
  its reply still paid for it). An attempt that ended keeps its totals in its stats
  (``stats["usage"]``); for one that died (SIGKILL, OOM) the journal rows it committed say what it
  paid.
- **Recorded with the step**: each live call's journal row keeps the usage its own body recorded; a
  global-cache entry keeps the call's usage with its nested steps'. A call answered from the journal
  counts its own and its nested calls' recorded usage as **saved by replay**, one answered from the
  cache the entry's as **saved by cache**.
- Reports, ``suture show``/``suture runs`` and the adapters' artifacts add them up per model and
  price them (:mod:`suture.prices`).
- Outside a run ``record_usage`` does nothing; inside a run but outside any step the tokens are
  paid by the attempt and cannot be saved (nothing journals them).
"""

from __future__ import annotations

import json
from typing import Any

from .context import frame_var

#: what one model's usage holds, per way it was had
KINDS = ("paid", "replayed", "cached")


def record_usage(*, model: str, input_tokens: int = 0, output_tokens: int = 0, provider: str | None = None) -> None:
    """Record that the code running now used a model: ``input_tokens`` in, ``output_tokens`` out.

    Call it in the body of the step that made the model call (see the module). Outside a run it
    does nothing. Raises ``ValueError`` for an empty model name or negative / non-integer counts.
    """
    if not isinstance(model, str) or not model:
        raise ValueError(f"suture.record_usage(model={model!r}): model must be a non-empty string, e.g. 'gpt-4o'")
    for name, n in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"suture.record_usage({name}={n!r}): token counts are integers >= 0")
    if provider is not None and not isinstance(provider, str):
        raise ValueError(f"suture.record_usage(provider={provider!r}): provider is a string like 'openai' or None")
    frame = frame_var.get()
    if frame is None:
        return
    used = {f"{provider}:{model}" if provider else model: [input_tokens, output_tokens]}
    with frame.run.lock:
        add(frame.run.stats.usage, "paid", used)
        owner = step_frame(frame)
        if owner.step is not None:
            owner.usage = merge(owner.usage, used)


def step_frame(frame: Any) -> Any:
    """The frame whose step a call made in ``frame`` belongs to (through branches), or the root."""
    while frame.step is None and frame.up is not None:
        frame = frame.up
    return frame


def merge(a: dict[str, list[int]] | None, b: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
    """The sum of two usages (``{model: [input, output]}``); ``None`` when both are empty."""
    if not b:
        return a
    out = {k: list(v) for k, v in (a or {}).items()}
    for k, (i, o) in b.items():
        cur = out.setdefault(k, [0, 0])
        cur[0] += i
        cur[1] += o
    return out


def add(totals: dict[str, dict[str, list[int]]], kind: str, usage: dict[str, list[int]] | None) -> None:
    """Add ``usage`` to an attempt's per-model totals under ``kind`` (paid, replayed or cached)."""
    if not usage:
        return
    for k, (i, o) in usage.items():
        cur = totals.setdefault(k, {}).setdefault(kind, [0, 0])
        cur[0] += i
        cur[1] += o


def nest(frame: Any, usage: dict[str, list[int]] | None) -> None:
    """A call made in ``frame`` had ``usage`` (its own and its nested calls', live or not): part of
    what the enclosing step's cache entry records."""
    if usage:
        owner = step_frame(frame)
        if owner.step is not None:
            owner.nested = merge(owner.nested, usage)


def saved(run: Any, frame: Any, kind: str, usage: dict[str, list[int]] | None) -> None:
    """A call answered without running (``kind``: replayed or cached) that had ``usage``."""
    if usage:
        add(run.stats.usage, kind, usage)
        nest(frame, usage)


def with_nested(journal: dict[tuple[str, str, str], tuple]) -> dict[tuple[str, str, str], dict[str, list[int]]]:
    """Per journal key, the usage replaying that call saves: its row's and every nested row's.

    A nested call's path is its ancestors' ``name#idx`` components (branches ``~...`` between them)."""
    out: dict[tuple[str, str, str], dict[str, list[int]]] = {}
    for (path, name, idx), rec in journal.items():
        own = decode(rec[7]) if len(rec) > 7 and rec[7] else None
        if not own:
            continue
        out[(path, name, idx)] = merge(out.get((path, name, idx)), own) or {}
        parts = path.split("/") if path else []
        for i, component in enumerate(parts):
            if component.startswith("~"):
                continue
            step, sep, n = component.rpartition("#")
            if sep:
                key = ("/".join(parts[:i]), step, n)
                out[key] = merge(out.get(key), own) or {}
    return out


def encode(usage: dict[str, list[int]]) -> str:
    """A usage as the journal and cache store it (compact JSON)."""
    return json.dumps(usage, separators=(",", ":"), sort_keys=True)


def decode(text: str | bytes | None) -> dict[str, list[int]]:
    """A stored usage back (``{}`` for none or an unreadable one)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return {str(k): [int(v[0]), int(v[1])] for k, v in data.items()} if isinstance(data, dict) else {}


def totals(stats_list: list[dict[str, Any] | None]) -> dict[str, dict[str, list[int]]]:
    """Per-model totals over several attempts' stats (``stats["usage"]``)."""
    out: dict[str, dict[str, list[int]]] = {}
    for stats in stats_list:
        for model, kinds in ((stats or {}).get("usage") or {}).items():
            for kind, (i, o) in kinds.items():
                cur = out.setdefault(model, {}).setdefault(kind, [0, 0])
                cur[0] += int(i)
                cur[1] += int(o)
    return out


def summary(per_model: dict[str, dict[str, list[int]]]) -> dict[str, Any]:
    """Tokens and cost per kind over per-model totals: ``{"paid" | "replayed" | "cached" | "saved":
    {"input", "output", "cost"}, "unpriced": [models]}`` — cost in USD, ``None`` when no model of that
    kind has a price, partial when only some have (they are listed in ``unpriced``)."""
    from .prices import cost

    out: dict[str, Any] = {k: {"input": 0, "output": 0, "cost": None} for k in (*KINDS, "saved")}
    unpriced: set[str] = set()
    for model, kinds in per_model.items():
        for kind, (i, o) in kinds.items():
            c = cost(model, i, o)
            if c is None and (i or o):
                unpriced.add(model)
            for into in ((kind, "saved") if kind != "paid" else (kind,)):
                row = out[into]
                row["input"] += i
                row["output"] += o
                if c is not None:
                    row["cost"] = (row["cost"] or 0.0) + c
    out["unpriced"] = sorted(unpriced)
    return out


def short(row: dict[str, Any]) -> str:
    """``1.2k ($0.0042)``: the tokens (in + out) and cost of one kind of :func:`summary`, compactly."""
    n = row["input"] + row["output"]
    if not n:
        return "-"
    text = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else f"{n:,}"
    return text + (f" (${row['cost']:.4f})" if row.get("cost") is not None else "")


def describe(row: dict[str, Any]) -> str:
    """``1,234 in / 56 out ($0.0042)`` for one kind of :func:`summary`; ``-`` for none."""
    if not row["input"] and not row["output"]:
        return "-"
    money = f" (${row['cost']:.4f})" if row.get("cost") is not None else ""
    return f"{row['input']:,} in / {row['output']:,} out{money}"


def record_found(found: dict[str, Any] | None) -> None:
    """Record a usage an integration read from a model's response (``{"provider", "model",
    "input_tokens", "output_tokens"}``, as the integrations' ``usage_of`` return); ``None``: nothing."""
    if found and (found.get("input_tokens") or found.get("output_tokens")):
        record_usage(model=str(found.get("model") or "unknown"), input_tokens=int(found.get("input_tokens") or 0),
                     output_tokens=int(found.get("output_tokens") or 0), provider=found.get("provider") or None)


__all__ = ["KINDS", "add", "decode", "describe", "encode", "merge", "nest", "record_usage", "saved", "short",
           "step_frame", "summary", "totals", "record_found", "with_nested"]

"""A run's report as one self-contained HTML page: the timeline of its attempts and journal.

``suture report RUN --html out.html`` writes it; the Flyte 2 report and the flytekit ``suture`` Deck
show it. The page has inline CSS only (no script, no external asset): it opens from a file, a CI
artifact or an orchestrator's UI as it is. It shows

- the run (id, agent, status, attempts) and its totals: calls live / replayed / cached, the seconds
  of work saved, tokens and cost paid and saved by replay and by cache (:func:`suture.usage.describe`);
- a timeline: one lane per attempt (its span, and a bar per journal entry it ran, by start and
  duration);
- each attempt: status, resources, calls, tokens paid, its failure (``layer/kind`` and
  :meth:`suture.Failure.as_prompt`) and the decision taken;
- events (escalations, divergences, suspensions, crashes, step failures) and questions asked;
- each journal entry: step, path, live / replayed / cached / answered / failed, its attempt, duration,
  tokens and a bar on the run's time axis (the first ``max_rows``; the page says how many are left out).

Every string a run wrote (run id, step names, errors, questions, answers) is escaped. Key numbers carry
stable ids and ``data-`` attributes (``id="tokens-paid" data-input=... data-output=... data-cost=...``,
``id="calls-live" data-live=...``, ``<tr id="attempt-2" data-status=...>``, ``<tr class="entry"
data-how=...>``) for scripts and tests. The numbers are those of :func:`suture.report.build_report`,
the same the markdown report (:meth:`suture.models.Report.to_markdown`) shows.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any, Iterable

from .failures import Failure, Resources
from .models import Report
from .usage import describe, summary

#: journal entries (and events) shown at most; the page says how many more the run has
MAX_ROWS = 2000

#: event kinds the page lists (besides step failures, paired with their decision)
EVENT_KINDS = ("escalation", "divergence", "suspend", "crashed")

_HOW = {"live": "live", "cache": "cached", "human": "answered", "failed": "failed"}

_CSS = """
.suture-report{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
 background:#fff;max-width:1240px;margin:0 auto;padding:16px}
.suture-report h1{font-size:20px;margin:0 0 6px}.suture-report h1 code{font-size:inherit}.suture-report h2{font-size:16px;margin:22px 0 8px;
 border-bottom:1px solid #d0d7de;padding-bottom:4px}
.suture-report code,.suture-report pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
 font-size:12px}
.suture-report pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;background:#f6f8fa;
 padding:6px 8px;border-radius:4px}
.suture-report .meta span{margin-right:16px}.suture-report .error{color:#b42318}
.suture-report .badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;
 background:#eaeef2}
.suture-report .st-succeeded{background:#dafbe1;color:#116329}.suture-report .st-failed,
.suture-report .st-crashed{background:#ffebe9;color:#b42318}.suture-report .st-running,
.suture-report .st-retrying{background:#fff8c5;color:#7d4e00}.suture-report .st-suspended,
.suture-report .st-interrupted{background:#fbefff;color:#6e40c9}
.suture-report .cards{display:flex;flex-wrap:wrap;gap:8px}
.suture-report .card{border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;min-width:120px}
.suture-report .card b{display:block;font-size:18px}.suture-report .card small{color:#59636e}
.suture-report table{border-collapse:collapse;width:100%;border:0}
.suture-report th,.suture-report td{border:0;border-bottom:1px solid #eaeef2;padding:4px 6px;text-align:left;
 vertical-align:top}
.suture-report th{background:#f6f8fa;font-weight:600}.suture-report td.n{text-align:right}
.suture-report .lane{display:flex;align-items:center;margin:3px 0}
.suture-report .lane-label{width:150px;flex:none;font-size:12px}
.suture-report .track{position:relative;flex:1;height:16px;background:#f6f8fa;border-radius:3px;
 min-width:120px}
.suture-report .span{position:absolute;top:0;bottom:0;background:#d0d7de;border-radius:3px;opacity:.7}
.suture-report .tick{position:absolute;top:3px;bottom:3px;min-width:2px;border-radius:2px}
.suture-report .how-live{background:#0969da}.suture-report .how-cached{background:#1a7f37}
.suture-report .how-answered{background:#8250df}.suture-report .how-failed{background:#cf222e}
.suture-report .how-attempt{background:#d0d7de}
.suture-report .legend span{display:inline-block;margin-right:12px;font-size:12px}
.suture-report .legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.suture-report .axis{display:flex;justify-content:space-between;margin-left:150px;font-size:11px;
 color:#59636e}
.suture-report .note{color:#59636e;font-style:italic}
"""


def _e(value: Any) -> str:
    """``value`` as HTML text or an attribute value: every string a run wrote goes through here."""
    return escape("" if value is None else str(value), quote=True)


def _attrs(**data: Any) -> str:
    """`` data-a="1" data-b="x"``: escaped ``data-`` attributes (``_`` in a name becomes ``-``)."""
    return "".join(f' data-{k.replace("_", "-")}="{_e(v)}"' for k, v in data.items())


def duration_text(seconds: float | None) -> str:
    """``12µs`` / ``3.4ms`` / ``1.25s`` (``""`` for none): durations as reports and the CLI print them."""
    if seconds is None:
        return ""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


_dur = duration_text


def _num(x: float) -> str:
    return f"{x:.6g}"


def _cost(row: dict[str, Any]) -> str:
    return "" if row.get("cost") is None else f"{row['cost']:.6f}"


def _failure_text(f: dict[str, Any]) -> str:
    """What a model would be told of a stored failure (its prompt), or its message if it is not one."""
    try:
        return Failure.model_validate(f).as_prompt()
    except Exception:  # noqa: BLE001 - an old or foreign record: show what it says
        return str(f.get("message", ""))


def _decision(action: dict[str, Any] | None) -> str:
    if not action:
        return ""
    text = str(action.get("kind", ""))
    if action.get("reason"):
        text += f" — {action['reason']}"
    if action.get("resources"):
        try:
            text += f" → {Resources(**action['resources']).describe()}"
        except Exception:  # noqa: BLE001 - shown as stored
            text += f" → {action['resources']}"
    return text


def _usage_text(usage: dict[str, list[int]] | None) -> tuple[int, str]:
    """Total tokens of an entry's usage and a line per model."""
    if not usage:
        return 0, ""
    return (sum(i + o for i, o in usage.values()),
            "; ".join(f"{model}: {i:,} in / {o:,} out" for model, (i, o) in usage.items()))


class _Axis:
    """The run's time axis: an epoch second to a percentage of the page's width."""

    def __init__(self, report: Report, entries: list[Any]) -> None:
        now = time.time()
        starts = [a.started_at for a in report.attempts] + [e.started_at for e in entries]
        ends = ([a.ended_at or a.started_at for a in report.attempts]
                + [e.started_at + (e.duration or 0.0) for e in entries])
        self.t0 = min(starts) if starts else now
        self.t1 = max(ends) if ends else now
        self.span = max(self.t1 - self.t0, 1e-6)

    def bar(self, start: float, duration: float) -> str:
        left = min(max((start - self.t0) / self.span * 100, 0.0), 100.0)
        width = min(max(duration / self.span * 100, 0.3), 100.0 - left) if left < 100 else 0.3
        return f"left:{left:.3f}%;width:{width:.3f}%"


def _header(report: Report, error: str | None) -> str:
    st = _e(report.status)
    out = [f'<header id="run"{_attrs(run_id=report.run_id, agent=report.agent, status=report.status, attempts=len(report.attempts))}>',
           f"<h1>suture run <code>{_e(report.run_id)}</code></h1>",
           f'<div class="meta"><span>agent <b id="agent">{_e(report.agent)}</b></span>'
           f'<span>status <span id="status" class="badge st-{st}">{st}</span></span>'
           f'<span>attempts <b id="attempts" data-attempts="{len(report.attempts)}">{len(report.attempts)}</b></span>'
           f'<span>journal entries <b id="journal-entries" data-entries="{report.entries}">{report.entries}</b></span>'
           "</div>"]
    if error:
        out.append(f'<pre class="error" id="run-error">{_e(error)}</pre>')
    return "".join(out) + "</header>"


def _totals(report: Report) -> str:
    r = report
    saved = r.replayed + r.cached
    cards = [("calls-live", "live", r.live, "calls run live"),
             ("calls-replayed", "replayed", r.replayed, "calls replayed from the journal"),
             ("calls-cached", "cached", r.cached, "calls served from the cache"),
             ("calls-saved", "saved", saved, "calls saved")]
    out = ['<h2>Totals</h2><div class="cards">']
    out += [f'<div class="card" id="{i}" data-{k}="{n}"><b>{n:,}</b><small>{label}</small></div>' for i, k, n, label in cards]
    out.append(f'<div class="card" id="seconds-saved" data-seconds="{_num(r.saved_seconds)}">'
               f"<b>{r.saved_seconds:.2f}s</b><small>of work saved</small></div></div>")
    t = r.tokens or summary(r.usage)
    rows = [("tokens-paid", "paid", "paid"), ("tokens-saved", "saved", "saved (replay + cache)"),
            ("tokens-replayed", "replayed", "saved by replay"), ("tokens-cached", "cached", "saved by cache")]
    out.append('<table class="tokens"><tr><th>tokens</th><th>input</th><th>output</th><th>cost (USD)</th>'
               "<th>summary</th></tr>")
    for ident, kind, label in rows:
        row = t[kind]
        out.append(f'<tr id="{ident}"{_attrs(input=row["input"], output=row["output"], cost=_cost(row))}>'
                   f'<td>{label}</td><td class="n">{row["input"]:,}</td><td class="n">{row["output"]:,}</td>'
                   f'<td class="n">{"" if row.get("cost") is None else "$" + format(row["cost"], ".4f")}</td>'
                   f"<td>{_e(describe(row))}</td></tr>")
    out.append("</table>")
    if t.get("unpriced"):
        out.append(f'<p class="note" id="unpriced">no price known for: {_e(", ".join(t["unpriced"]))} '
                   f"(see suture.prices)</p>")
    return "".join(out)


def _timeline(report: Report, shown: list[Any], axis: _Axis) -> str:
    legend = "".join(f'<span><i class="how-{h}"></i>{h}</span>' for h in ("live", "cached", "answered", "failed"))
    out = ['<h2>Timeline</h2><div class="legend">', legend,
           '<span><i class="how-attempt"></i>attempt</span></div><div class="timeline" id="timeline">']
    by_attempt: dict[int, list[Any]] = {}
    for e in shown:
        by_attempt.setdefault(e.attempt, []).append(e)
    for a in report.attempts:
        end = a.ended_at or axis.t1
        s = a.stats or {}
        tip = f"attempt {a.attempt}: {a.status}, {_dur(end - a.started_at)}, {s.get('replayed', 0)} replayed"
        out.append(f'<div class="lane"{_attrs(attempt=a.attempt)}><span class="lane-label">#{a.attempt} '
                   f'<span class="badge st-{_e(a.status)}">{_e(a.status)}</span></span><div class="track">'
                   f'<div class="span" style="{axis.bar(a.started_at, end - a.started_at)}" title="{_e(tip)}"></div>')
        for e in by_attempt.get(a.attempt, []):
            how = _HOW.get(e.source, e.source)
            out.append(f'<div class="tick how-{_e(how)}" style="{axis.bar(e.started_at, e.duration or 0.0)}" '
                       f'title="{_e(f"{e.name} #{e.idx} ({how}, {_dur(e.duration)})")}"></div>')
        out.append("</div></div>")
    out.append(f'</div><div class="axis"><span>0s</span><span id="run-span" data-seconds="{_num(axis.span)}">'
               f"{_dur(axis.span)}</span></div>")
    return "".join(out)


def _attempts(report: Report) -> str:
    out = ['<h2>Attempts</h2><table class="attempts"><tr><th>#</th><th>status</th><th>resources</th>'
           "<th>live</th><th>replayed</th><th>cached</th><th>tokens paid</th><th>tokens saved</th>"
           "<th>failure</th><th>decision</th></tr>"]
    for a in report.attempts:
        s = a.stats or {}
        used = summary(s.get("usage") or {})
        f = a.failure or {}
        fail = f"{f.get('layer')}/{f.get('kind')}" if f else ""
        act = a.action or {}
        res = Resources(**a.resources).describe() if a.resources else "no limits"
        ended = f"<br><small>{_dur(a.ended_at - a.started_at)}</small>" if a.ended_at else ""
        data = _attrs(attempt=a.attempt, status=a.status, live=s.get("live", ""), replayed=s.get("replayed", ""),
                      cached=s.get("cached", ""), paid_input=used["paid"]["input"],
                      paid_output=used["paid"]["output"], failure=fail, decision=act.get("kind", ""))
        cell = (f'<strong class="layer">{_e(fail)}</strong><pre class="prompt">{_e(_failure_text(f))}</pre>'
                if f else "")
        out.append(f'<tr id="attempt-{_e(a.attempt)}" class="attempt"{data}><td>{_e(a.attempt)}</td>'
                   f'<td><span class="badge st-{_e(a.status)}">{_e(a.status)}</span>{ended}</td><td>{_e(res)}</td>'
                   f'<td class="n">{_e(s.get("live", ""))}</td><td class="n">{_e(s.get("replayed", ""))}</td>'
                   f'<td class="n">{_e(s.get("cached", ""))}</td><td>{_e(describe(used["paid"]))}</td>'
                   f'<td>{_e(describe(used["saved"]))}</td><td>{cell}</td><td>{_e(_decision(act))}</td></tr>')
    return "".join(out) + "</table>"


def _event_rows(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """(event, kind, text) for the events the page lists; a step failure is paired with its decision."""
    rows = []
    for i, ev in enumerate(events):
        kind, data = ev.get("kind"), ev.get("data") or {}
        if kind == "failure" and isinstance(data, dict) and data.get("step"):
            decision = next((d.get("data") for d in events[i + 1:i + 4] if d.get("kind") == "decision"), None)
            text = f"step {data['step']}: {data.get('layer')}/{data.get('kind')}: {str(data.get('message', ''))[:300]}"
            if decision:
                text += f" → {_decision(decision)}"
            rows.append((ev, "step failure", text))
        elif kind == "escalation" and isinstance(data, dict):
            try:
                frm, to = Resources(**data.get("from", {})).describe(), Resources(**data.get("to", {})).describe()
            except Exception:  # noqa: BLE001 - shown as stored
                frm, to = str(data.get("from")), str(data.get("to"))
            rows.append((ev, "escalation", f"{data.get('failure', '')}: {frm} → {to}"))
        elif kind == "suspend" and isinstance(data, dict):
            rows.append((ev, "suspend", f"waiting for an answer to {data.get('qid')}: {data.get('question', '')}"))
        elif kind == "crashed" and isinstance(data, dict) and data.get("reason"):
            rows.append((ev, "crashed", str(data["reason"])))
        elif kind in EVENT_KINDS:
            rows.append((ev, str(kind), json.dumps(data, default=str)[:600]))
    return rows


def _events(events: list[dict[str, Any]], axis: _Axis, cap: int) -> str:
    rows = _event_rows(events)
    if not rows:
        return ""
    out = ['<h2>Events</h2><table class="events"><tr><th>attempt</th><th>at</th><th>event</th><th>what</th></tr>']
    for ev, kind, text in rows[:cap]:
        at = f"+{_dur(max(float(ev.get('ts') or axis.t0) - axis.t0, 0.0))}"
        out.append(f'<tr class="event"{_attrs(kind=kind, attempt=ev.get("attempt"))}><td>{_e(ev.get("attempt"))}</td>'
                   f"<td>{_e(at)}</td><td>{_e(kind)}</td><td><pre>{_e(text)}</pre></td></tr>")
    out.append("</table>")
    if len(rows) > cap:
        out.append(f'<p class="note">{len(rows) - cap:,} more events not shown (see suture show --json)</p>')
    return "".join(out)


def _questions(questions: Iterable[Any]) -> str:
    qs = list(questions)
    if not qs:
        return ""
    out = ['<h2>Questions</h2><table class="questions"><tr><th>id</th><th>status</th><th>question</th>'
           "<th>answer</th></tr>"]
    for q in qs:
        answer = "" if q.status == "pending" else json.dumps(q.answer, default=str, ensure_ascii=False)
        out.append(f'<tr class="question"{_attrs(qid=q.qid, status=q.status)}><td><code>{_e(q.qid)}</code></td>'
                   f"<td>{_e(q.status)}</td><td><pre>{_e(q.question)}</pre></td><td><pre>{_e(answer)}</pre></td></tr>")
    return "".join(out) + "</table>"


def _journal(entries: list[Any], shown: list[Any], last_attempt: int, axis: _Axis) -> str:
    out = [f'<h2>Journal ({len(entries):,} entries)</h2><table class="journal"><tr><th>seq</th><th>step</th>'
           "<th>path</th><th>#</th><th>how</th><th>attempt</th><th>started</th><th>duration</th><th>tokens</th>"
           '<th style="width:28%">timeline</th></tr>']
    for e in shown:
        how = _HOW.get(e.source, e.source)
        later = f" → replayed in {e.attempt + 1}..{last_attempt}" if e.attempt < last_attempt else ""
        if how == "failed":
            later += " (handled by the agent)"
        n, per_model = _usage_text(e.usage)
        data = _attrs(seq=e.seq, how=how, replayed=int(e.attempt < last_attempt), attempt=e.attempt,
                      tokens=n, duration=_num(e.duration or 0.0))
        out.append(f'<tr class="entry"{data}><td class="n">{e.seq}</td><td><code>{_e(e.name)}</code></td>'
                   f"<td><code>{_e(e.path)}</code></td><td>{_e(e.idx)}</td><td>{_e(how + later)}</td>"
                   f'<td class="n">{_e(e.attempt)}</td><td>+{_dur(max(e.started_at - axis.t0, 0.0))}</td>'
                   f'<td class="n">{_dur(e.duration)}</td><td title="{_e(per_model)}">{f"{n:,}" if n else ""}</td>'
                   f'<td><div class="track"><div class="tick how-{_e(how)}" '
                   f'style="{axis.bar(e.started_at, e.duration or 0.0)}"></div></div></td></tr>')
    out.append("</table>")
    if len(entries) > len(shown):
        out.append(f'<p class="note" id="rows-capped"{_attrs(shown=len(shown), total=len(entries))}>showing the '
                   f"first {len(shown):,} of {len(entries):,} journal entries (all of them: suture show RUN "
                   f"--limit 0, or --json)</p>")
    return "".join(out)


def render_report(report: Report, entries: list[Any], events: list[dict[str, Any]] | None = None, *,
                  questions: Iterable[Any] = (), error: str | None = None, max_rows: int = MAX_ROWS,
                  fragment: bool = False) -> str:
    """The HTML page of ``report`` (see the module), with its journal ``entries`` (``store.list_entries``),
    ``events`` (``store.list_events``), ``questions`` and the run's ``error``.

    At most ``max_rows`` journal entries and events are shown. ``fragment=True``: a ``<div>`` with its
    own scoped style, for a page that has its own ``<html>`` (an orchestrator's report or deck)."""
    events = events or []
    shown = entries[:max_rows] if max_rows else entries
    axis = _Axis(report, shown)
    last_attempt = max((a.attempt for a in report.attempts), default=0)
    body = "".join((
        f'<div class="suture-report"><style>{_CSS}</style>', _header(report, error), _totals(report),
        _timeline(report, shown, axis), _attempts(report), _events(events, axis, max_rows or len(events) or 1),
        _questions(questions), _journal(entries, shown, last_attempt, axis), "</div>",
    ))
    if fragment:
        return body
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>suture run {_e(report.run_id)} ({_e(report.status)})</title></head>"
            f"<body>{body}</body></html>\n")


def render_html(store: Any, run_id: str, *, max_rows: int = MAX_ROWS, fragment: bool = False) -> str:
    """The HTML report of run ``run_id`` in ``store`` (see the module). Raises ``KeyError`` for an
    unknown run."""
    from .report import build_report

    rec = store.get_run(run_id)
    if rec is None:
        raise KeyError(run_id)
    report = build_report(store, run_id)
    try:
        questions = store.questions(run_id=run_id, status=None)
    except Exception:  # noqa: BLE001 - a store without questions: the page leaves them out
        questions = []
    return render_report(report, store.list_entries(run_id), store.list_events(run_id), questions=questions,
                         error=rec.error, max_rows=max_rows, fragment=fragment)


__all__ = ["MAX_ROWS", "render_html", "render_report"]

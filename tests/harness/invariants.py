"""The invariants between a crash run and its oracle (the runs themselves: :mod:`runner`).

:func:`check_crash_run` checks, in this order:

1. **result and state** — the crash run returns the oracle's result, and the state it *published*
   (``store.state_get("Notes")`` after the run) is the oracle's; it returns what it publishes.
   Exactly, except for the changes tools make inside steps that run concurrently (programs with
   ``tool_state="fan"``), which are at-least-once: every change the oracle has is there as often,
   and a change is there more often only as often as a call that makes it ran in flight at a kill;
2. **no divergence** — the agent is strict; a program whose questions the harness changed (see
   :class:`runner.AskPlan`) diverges exactly once, at its first question, reason "question changed"
   (a strict one stops there with ``DivergenceError``);
3. **the journal's shape** — every call, live, from the cache or a handled failure, as the oracle's;
4. **exactly once** — every completed call (a handled failure too) executed once, in the attempt
   that recorded it, never after, and at most once in each earlier attempt that a fault killed (in
   flight) — or, before a non-strict "question changed" divergence, once in an attempt whose entry
   the divergence dropped (no more such calls than it dropped);
5. **side effects** — each side-effect call delivered at most once per execution, and the sink,
   deduplicated by idempotency key, holds the oracle's deliveries;
6. **batch durability** — the steps a killed attempt completed before a ``slow`` step whose run
   passed the window's time bound (it logged that the window was written) never run again;
7. **questions** — the crash run asked the oracle's questions and journaled the oracle's answers,
   suspended once per question (and once more per question asked before the harness changed them),
   published the oracle's state at each suspension, and after a change asked the changed question
   again, waiting for its own answer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from runner import AskPlan, Outcome

#: what an unchanged Notes holds (nothing is published for a state the run never changed)
DEFAULT_NOTES = {"total": 0, "items": [], "log": []}


@dataclass
class Expect:
    """What the program's shape allows: at-least-once tool changes (``fan_state``); the questions
    plan of the crash run (``plan``)."""

    fan_state: bool = False
    plan: AskPlan | None = None


def exactly_once(out: Outcome, label: str) -> None:
    """Each call executed once, in the attempt that recorded it (0 times if from the cache)."""
    calls = out.calls()
    counts = Counter(e["path"] for e in out.executions)
    for cp, entry in calls.items():
        expected = 0 if entry.source == "cache" else 1
        if counts.get(cp, 0) != expected:
            raise AssertionError(f"{label}: call {cp} executed {counts.get(cp, 0)} times, expected {expected}")
    extra = set(counts) - set(calls)
    if extra:
        raise AssertionError(f"{label}: executions of calls the journal does not hold: {sorted(extra)}")
    stuck = [m for m in out.log if m.get("mark") == "flushed" and m.get("pending")]
    if stuck:
        raise AssertionError(f"{label}: a batch window was still unwritten 10 s after its bound: {stuck}")


def check_crash_run(crash: Outcome, oracle: Outcome, kills: int, expect: Expect | None = None) -> int:
    """The invariants of the crash run against its oracle; returns how many executions were in flight."""
    expect = expect or Expect()
    calls = crash.calls()
    flight_notes = Counter(e["note"] for e in crash.executions if "note" in e
                           and (e["path"] not in calls or e["attempt"] != calls[e["path"]].attempt))
    loose = flight_notes if expect.fan_state else None
    _results(crash, oracle, loose)
    redo_from, dropped = _divergences(crash, expect.plan)
    _shape(crash, oracle)
    in_flight = _executions(crash, calls, kills, redo_from, dropped)
    _side_effects(crash, oracle, kills, redo_from)
    _batch(crash)
    _questions(crash, oracle, expect.plan, loose)
    return in_flight


# ------------------------------------------------------------------------------------------------
# 1. result and state
# ------------------------------------------------------------------------------------------------


def _results(crash: Outcome, oracle: Outcome, loose: Counter | None) -> None:
    if loose is None:
        if crash.result != oracle.result:
            raise AssertionError(f"result differs: crash run {crash.result!r}, oracle {oracle.result!r}")
        compare_state(crash.state, oracle.state, None, "the final published state")
    else:
        if {k: v for k, v in crash.result.items() if k != "state"} != \
                {k: v for k, v in oracle.result.items() if k != "state"}:
            raise AssertionError(f"result differs: crash run {crash.result!r}, oracle {oracle.result!r}")
        compare_state(crash.result["state"], oracle.result["state"], loose, "the returned state")
        compare_state(crash.state, oracle.state, loose, "the final published state")
    returned = crash.result.get("state") if isinstance(crash.result, dict) else None
    published = crash.state if crash.state is not None else DEFAULT_NOTES
    if returned is not None and returned != published:
        raise AssertionError(f"the crash run returned state {returned!r} but published {crash.state!r}")


def compare_state(got: Any, want: Any, loose: Counter | None, what: str) -> None:
    """``got == want``; with ``loose`` (the changes made by calls in flight at a kill), the tools'
    ``log`` as a multiset: nothing of ``want`` missing, nothing more than ``loose`` added."""
    got, want = got or DEFAULT_NOTES, want or DEFAULT_NOTES  # nothing published: the state never changed
    if loose is None:
        if got != want:
            raise AssertionError(f"{what} differs: crash run {got!r}, oracle {want!r}")
        return
    if {k: v for k, v in got.items() if k != "log"} != {k: v for k, v in want.items() if k != "log"}:
        raise AssertionError(f"{what} differs (apart from the tools' log): crash run {got!r}, oracle {want!r}")
    have, need = Counter(got["log"]), Counter(want["log"])
    lost = need - have
    if lost:
        raise AssertionError(f"{what}: changes made by tools in a fan-out were LOST (at-least-once broken): "
                             f"{dict(lost)} missing from the crash run's log {got['log']} (oracle: {want['log']})")
    beyond = (have - need) - loose
    if beyond:
        raise AssertionError(f"{what}: changes applied more often than their calls ran in flight at a kill: "
                             f"{dict(beyond)} (in flight: {dict(loose)}; crash run {got['log']}, oracle {want['log']})")


# ------------------------------------------------------------------------------------------------
# 2. divergences, 3. shape, 4. executions
# ------------------------------------------------------------------------------------------------


def _divergences(crash: Outcome, plan: AskPlan | None) -> tuple[int | None, int]:
    """Check the divergences; return (the attempt of a non-strict "question changed" one, how many
    entries it dropped) or (None, 0)."""
    diverged = [e for e in crash.events if e["kind"] == "divergence"]
    changed = plan is not None and plan.flipped_at is not None and plan.flipped_at >= 2  # after a journaled answer
    if not changed:
        if diverged or any((a.stats or {}).get("diverged") for a in crash.attempts):
            raise AssertionError(f"the crash run diverged: {diverged}")
        if crash.strict_stops:
            raise AssertionError(f"a strict stop without a changed question: {crash.strict_stops}")
        return None, 0
    first_qid = crash.suspensions[0]["qid"]
    if len(diverged) != 1:
        raise AssertionError(f"the changed questions should make exactly one divergence, at {first_qid!r}: {diverged}")
    (event,) = diverged
    data = event["data"]
    if data.get("step") != "suture.ask" or data.get("reason") != "question changed" or data.get("qid") != first_qid:
        raise AssertionError(f"the divergence is not the changed question {first_qid!r}: {event}")
    if data.get("strict"):
        if event["attempt"] not in crash.strict_stops or "DivergenceError" not in crash.strict_stops[event["attempt"]]:
            raise AssertionError(f"a strict divergence without the attempt stopping with DivergenceError: {event}, "
                                 f"stops {list(crash.strict_stops)}")
        return None, 0
    if crash.strict_stops:
        raise AssertionError(f"a non-strict program stopped: {crash.strict_stops}")
    return event["attempt"], int(data.get("dropped") or 0)


def _shape(crash: Outcome, oracle: Outcome) -> None:
    shape = {cp: e.source for cp, e in crash.calls().items()}
    want = {cp: e.source for cp, e in oracle.calls().items()}
    if shape != want:
        missing = sorted(set(want) - set(shape))
        more = sorted(set(shape) - set(want))
        other = sorted(cp for cp in set(shape) & set(want) if shape[cp] != want[cp])
        raise AssertionError(f"the crash run's journal differs from the oracle's: missing {missing[:10]}, "
                             f"extra {more[:10]}, other source {other[:10]}")


def _executions(crash: Outcome, calls: dict[str, Any], kills: int, redo_from: int | None, dropped: int) -> int:
    """Every completed call executed exactly once; in flight at a kill: once more per kill (see 4.)."""
    killed = crash.killed
    per: dict[str, Counter[int]] = defaultdict(Counter)
    for e in crash.executions:
        per[e["path"]][e["attempt"]] += 1
    in_flight = 0
    redone: set[str] = set()
    for cp, entry in calls.items():
        by_attempt = per.get(cp, Counter())
        expected = 0 if entry.source == "cache" else 1
        if by_attempt.get(entry.attempt, 0) != expected:
            raise AssertionError(f"call {cp} executed {by_attempt.get(entry.attempt, 0)} times in attempt "
                                 f"{entry.attempt}, which recorded it ({entry.source}); expected {expected}")
        for a, n in by_attempt.items():
            if a == entry.attempt:
                continue
            if a > entry.attempt:
                raise AssertionError(f"call {cp} completed in attempt {entry.attempt} and executed again in attempt {a}")
            if redo_from is not None and a < redo_from <= entry.attempt and n == 1:
                redone.add(cp)  # its entry was dropped by the divergence: it ran again after it
                continue
            if a not in killed or n > 1:
                raise AssertionError(f"call {cp} executed {n} times in attempt {a} without completing there "
                                     f"(killed attempts: {sorted(killed)})")
            in_flight += 1
    unknown = set(per) - set(calls)
    if redo_from is not None:  # dropped by the divergence and not reached again
        gone = {cp for cp in unknown if max(per[cp]) < redo_from}
        redone |= gone
        unknown -= gone
    if unknown:
        raise AssertionError(f"executions of calls that never completed: {sorted(unknown)[:10]}")
    if len(redone) > dropped + kills:
        raise AssertionError(f"{len(redone)} calls ran again after the divergence, which dropped {dropped} entries: "
                             f"{sorted(redone)[:10]}")
    if in_flight and not kills:
        raise AssertionError("executions in flight without any kill")
    return in_flight


# ------------------------------------------------------------------------------------------------
# 5. side effects, 6. batch, 7. questions
# ------------------------------------------------------------------------------------------------


def _side_effects(crash: Outcome, oracle: Outcome, kills: int, redo_from: int | None) -> None:
    seen: dict[str, Any] = {}
    raw: Counter[str] = Counter()
    by_path: Counter[str] = Counter()
    calls = crash.calls()
    for d in crash.deliveries:
        key = d["key"].split(":", 1)[1]  # without the run id
        raw[key] += 1
        by_path[d["path"]] += 1
        if redo_from is not None and d["attempt"] < redo_from and (
                d["path"] not in calls or calls[d["path"]].attempt >= redo_from):
            continue  # its entry was dropped by the divergence: it ran again after it (other inputs, same key)
        if key in seen and seen[key] != d["value"]:
            raise AssertionError(f"side effect {key} delivered twice with different values: {seen[key]} / {d['value']}")
        seen[key] = d["value"]
    want_sink = {d["key"].split(":", 1)[1]: d["value"] for d in oracle.deliveries}
    if seen != want_sink:
        raise AssertionError(f"the deduplicated sink differs from the oracle's: {seen} != {want_sink}")
    ran = Counter(e["path"] for e in crash.executions)  # a kill may come while an async one awaits: fewer
    other = {p: (n, ran[p]) for p, n in by_path.items() if n > ran[p]}
    if other:
        raise AssertionError(f"side effects delivered more often than their calls executed (deliveries, executions): "
                             f"{other}")
    if redo_from is None and any(n > 1 + kills for n in raw.values()):
        raise AssertionError(f"a side effect was sent more than once per kill: {raw}")


def _batch(crash: Outcome) -> None:
    """A killed attempt's steps before a slow step that saw its window written never run again."""
    final = {cp: e.attempt for cp, e in crash.calls().items()}
    for i, mark in enumerate(crash.log):
        if mark.get("mark") != "flushed":
            continue
        if mark.get("pending"):
            raise AssertionError(f"a batch window was still unwritten 10 s after its bound: {mark}")
        a = mark["attempt"]
        if a not in crash.killed:
            continue
        before = {e["path"] for e in crash.log[:i]
                  if "mark" not in e and e["attempt"] == a and e["path"] != mark["path"]}
        again = sorted(cp for cp in before if any(e["path"] == cp and e["attempt"] > a for e in crash.executions))
        if again:
            raise AssertionError(f"under batch durability, calls completed before the slow step {mark['path']} of "
                                 f"attempt {a} (their window was written while it ran) ran again after the kill: "
                                 f"{again[:10]} (recorded in attempts {[final.get(cp) for cp in again[:10]]})")


def _questions(crash: Outcome, oracle: Outcome, plan: AskPlan | None, loose: Counter | None) -> None:
    if not oracle.suspensions and not crash.suspensions:
        return
    if crash.questions != oracle.questions:
        raise AssertionError(f"the questions stored at the end differ: crash run {crash.questions}, "
                             f"oracle {oracle.questions}")
    if crash.answers() != oracle.answers():
        raise AssertionError(f"the journaled answers differ: crash run {crash.answers()}, oracle {oracle.answers()}")
    plan = plan or AskPlan()
    final = {(s["qid"], s["question"]) for s in oracle.suspensions}
    mine = [s for s in crash.suspensions if (s["qid"], s["question"]) in final]
    before = [s for s in crash.suspensions if (s["qid"], s["question"]) not in final]
    asked = Counter((s["qid"], s["question"]) for s in mine)
    if asked != Counter((s["qid"], s["question"]) for s in oracle.suspensions):
        raise AssertionError("the crash run did not suspend once per question: "
                             f"{[(s['qid'], s['question']) for s in crash.suspensions]}, oracle "
                             f"{[(s['qid'], s['question']) for s in oracle.suspensions]}")
    changed = plan.flipped_at is not None and not crash.strict_stops
    if len(before) != (plan.flipped_at if changed else 0):
        raise AssertionError(f"{len(before)} suspensions at questions the oracle never asked (the questions were "
                             f"{'changed after suspension ' + str(plan.flipped_at) if changed else 'not changed'}): "
                             f"{before}")
    if changed:  # the first question comes again, changed, and waits for its own answer
        if len(crash.suspensions) <= plan.flipped_at:
            raise AssertionError(f"the run did not wait for an answer after its questions changed: {crash.suspensions}")
        again = crash.suspensions[plan.flipped_at]
        if again["qid"] != crash.suspensions[0]["qid"] or (again["qid"], again["question"]) not in final:
            raise AssertionError(f"after the questions changed, the run did not wait at its first question again: "
                                 f"{again} (first {crash.suspensions[0]})")
    published = {(s["qid"], s["question"]): s["state"] for s in oracle.suspensions}
    for s in mine:
        compare_state(s["state"], published[(s["qid"], s["question"])], loose,
                      f"the state published at the suspension for {s['qid']!r} (attempt {s['attempt']})")


def executions_once(out: Outcome, kills: int) -> int:
    """Invariant 4 alone, for a run checked without an oracle (see :mod:`shared`)."""
    return _executions(out, out.calls(), kills, None, 0)

"""The ``suture`` command line: inspect runs, the journal and the cache; answer and resume runs.

Every listing takes ``--json`` for scripts. The store is the one the library uses
(``SUTURE_STORE_URL`` / ``SUTURE_HOME``), or ``--store URL``.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import Any

import click
from rich.table import Table

from .cli_text import (
    RUN_STATUSES,
    AgeParam,
    age_text,
    STATUS_STYLES,
    cell,
    command,
    error,
    make_console,
    say,
)
from .report_html import duration_text as _dur

#: prints user and error text literally (see suture.cli_text)
console = make_console()


def _store(ctx: click.Context) -> Any:
    from .config import get_store

    return get_store(ctx.obj.get("store"))


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


class _Group(click.Group):
    """Turns suture's own errors into one clear line and exit status 1 (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        from .errors import SutureError

        try:
            return super().invoke(ctx)
        except SutureError as exc:
            error(console, exc)
            sys.exit(getattr(exc, "exit_code", 1) if type(exc).__name__ in ("Suspended", "Preempted") else 1)


@click.group(cls=_Group)
@click.option("--store", envvar="SUTURE_STORE_URL", default=None,
              help="Store URL (default: SUTURE_STORE_URL, else $SUTURE_HOME/suture.db, else ~/.suture/suture.db).")
@click.version_option(package_name="suture")
@click.pass_context
def cli(ctx: click.Context, store: str | None) -> None:
    """suture: self-healing agents. Inspect runs, their journal and the global cache."""
    ctx.ensure_object(dict)
    ctx.obj["store"] = store


@cli.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="How many runs, newest first (a positive integer).")
@click.option("--status", default=None, type=click.Choice(RUN_STATUSES), help="Only runs with this status.")
@click.option("--waiting", is_flag=True, help="Only runs waiting for a human answer, with their questions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def runs(ctx: click.Context, limit: int, status: str | None, waiting: bool, as_json: bool) -> None:
    """List runs: status, attempts, journal size."""
    store = _store(ctx)
    if waiting:
        qs = store.questions(status="pending")
        if as_json:
            _emit_json([q.model_dump(by_alias=True) for q in qs])
            return
        table = Table(title="runs waiting for an answer")
        for col in ("run", "question id", "question", "asked"):
            table.add_column(col)
        for q in qs:
            table.add_row(cell(q.run_id), cell(q.qid), cell(q.question), cell(_when(q.created_at)))
        console.print(table)
        if qs:
            say(console, "answer with: ", command("answer", qs[0].run_id, "--json"), " '...'")
        return
    from .report import run_tokens
    from .usage import short

    rows = store.list_runs(limit=limit, status=status)
    tokens = {r.run_id: run_tokens(store, r.run_id) for r in rows}
    if as_json:
        _emit_json([dict(r.model_dump(), tokens=tokens[r.run_id]) for r in rows])
        return
    table = Table(title=f"suture runs ({store.url})")
    priced = any(t["paid"]["input"] + t["paid"]["output"] + t["saved"]["input"] + t["saved"]["output"]
                 for t in tokens.values())  # token columns only when some run recorded model usage
    for col in ("run", "agent", "status", "attempts", "steps", *(("tokens paid", "saved") if priced else ()),
                "updated"):
        table.add_column(col, overflow="fold")
    for r in rows:
        t = tokens[r.run_id]
        used = (cell(short(t["paid"])), cell(short(t["saved"]))) if priced else ()
        table.add_row(cell(r.run_id), cell(r.agent), cell(r.status, STATUS_STYLES.get(r.status, "")),
                      cell(r.attempts), cell(r.steps), *used, cell(_when(r.updated_at)))
    console.print(table)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=0),
              help="Journal entries to show (0 = all).")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool, limit: int) -> None:
    """A run's timeline: attempts (resources, failures, decisions) and each step live / cached / replayed."""
    from .report import build_report

    store = _store(ctx)
    rec = store.get_run(run_id)
    if rec is None:
        raise click.ClickException(f"no run {run_id!r} in {store.url} (see `suture runs`)")
    report = build_report(store, run_id)
    entries = store.list_entries(run_id)
    events = store.list_events(run_id)
    if as_json:
        _emit_json({"run": rec.model_dump(), "report": report.model_dump(),
                    "entries": [e.model_dump() for e in entries], "events": events})
        return
    say(console, (f"run {run_id}", "bold"), f"  agent {rec.agent}  status ", (rec.status, "bold"),
        f"  attempts {rec.attempts}")
    if rec.error:
        say(console, (rec.error, "red"))
    say(console, f"calls: {report.live} live, {report.cached} from cache, {report.replayed} replayed "
                 f"→ {report.replayed + report.cached} saved ({report.saved_seconds:.2f}s of work)")
    from .failures import Resources
    from .usage import describe, summary

    if report.usage:
        t = report.tokens
        say(console, f"tokens: paid {describe(t['paid'])}; saved {describe(t['saved'])} "
                     f"(replay {describe(t['replayed'])}, cache {describe(t['cached'])})")
        if t["unpriced"]:
            say(console, f"no price known for {', '.join(t['unpriced'])}: set SUTURE_PRICES (see suture.prices)")
    at = Table(title="attempts")
    for col in ("#", "status", "resources", "live", "replayed", "cached", "tokens paid", "failure", "decision"):
        at.add_column(col, overflow="fold")

    for a in report.attempts:
        f = a.failure or {}
        s = a.stats or {}
        act = a.action or {}
        at.add_row(*map(cell, (
            a.attempt, a.status, Resources(**a.resources).describe() if a.resources else "no limits",
            s.get("live", ""), s.get("replayed", ""), s.get("cached", ""),
            describe(summary(s.get("usage") or {})["paid"]),
            f"{f.get('layer')}/{f.get('kind')}: {f.get('message', '')}" if f else "",
            f"{act.get('kind', '')} {act.get('reason', '')}".strip(),
        )))
    console.print(at)
    # which attempt replayed an entry: every attempt after the one that ran it
    last_attempt = rec.attempts
    jt = Table(title=f"journal ({len(entries)} entries)")
    for col in ("seq", "step", "path", "#", "how", "attempt", "duration", "tokens", "status"):
        jt.add_column(col, overflow="fold")
    shown = entries if limit == 0 else entries[:limit]
    for e in shown:
        how = {"live": "live", "cache": "cached", "human": "answered"}.get(e.source, e.source)
        later = f" → replayed in {e.attempt + 1}..{last_attempt}" if e.attempt < last_attempt else ""
        status = "failed, handled by the agent" if e.source == "failed" else "ok"
        used = ", ".join(f"{i:,}/{o:,}" for i, o in e.usage.values()) if e.usage else ""
        jt.add_row(*map(cell, (e.seq, e.name, e.path, e.idx, how + later, e.attempt, _dur(e.duration), used,
                               status)))
    console.print(jt)
    if len(entries) > len(shown):
        say(console, f"... {len(entries) - len(shown)} more (use --limit 0)")
    rare = [ev for ev in events if ev["kind"] in ("divergence", "escalation", "suspend")]
    for ev in rare:
        say(console, (f"attempt {ev['attempt']}: {ev['kind']}", "yellow"), " ", json.dumps(ev["data"])[:300])


@cli.command()
@click.argument("run_id")
@click.option("--html", "html_path", default=None, metavar="PATH",
              help="Write the report as one self-contained HTML page to PATH ('-': standard output).")
@click.pass_context
def report(ctx: click.Context, run_id: str, html_path: str | None) -> None:
    """A run's report: markdown on standard output, or with --html a page with its timeline."""
    store = _store(ctx)
    if store.get_run(run_id) is None:
        raise click.ClickException(f"no run {run_id!r} in {store.url} (see `suture runs`)")
    if html_path is None:
        from .report import build_report

        click.echo(build_report(store, run_id).to_markdown(), nl=False)
        return
    from .report_html import render_html

    page = render_html(store, run_id)
    if html_path == "-":
        click.echo(page, nl=False)
        return
    try:
        with open(html_path, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as exc:
        raise click.ClickException(f"cannot write the report to {html_path!r}: {exc.strerror or exc}") from None
    say(console, f"wrote the report of run {run_id} to {html_path}")


@cli.group()
def cache() -> None:
    """The global cache shared across runs and machines."""


@cache.command("ls")
@click.option("--step", default=None, help="Only entries of this step.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1),
              help="How many entries, newest first (a positive integer).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def cache_ls(ctx: click.Context, step: str | None, limit: int, as_json: bool) -> None:
    """List cache entries and per-step hits, misses and time saved."""
    store = _store(ctx)
    rows = store.cache_list(step=step, limit=limit)
    stats = store.cache_stats()
    if as_json:
        _emit_json({"entries": [r.model_dump() for r in rows], "stats": stats})
        return
    table = Table(title="cache entries")
    for col in ("step", "version", "key", "hits", "size", "created", "expires"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*map(cell, (r.step, r.version, r.key[:16], r.hits, f"{r.size} B", _when(r.created_at),
                                  _when(r.expires_at) or "never")))
    console.print(table)
    st = Table(title="per step")
    for col in ("step", "hits", "misses", "saved"):
        st.add_column(col)
    for name, s in stats.items():
        st.add_row(*map(cell, (name, s["hits"], s["misses"], _dur(s["saved_seconds"]))))
    console.print(st)


@cache.command("clear")
@click.option("--step", default=None, help="Only entries of this step.")
@click.option("--expired", is_flag=True, help="Only expired entries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def cache_clear(ctx: click.Context, step: str | None, expired: bool, as_json: bool) -> None:
    """Delete cache entries (journals of runs are not touched)."""
    n = _store(ctx).cache_clear(step=step, expired_only=expired)
    if as_json:
        _emit_json({"deleted": n})
    else:
        say(console, f"deleted {n} cache entr{'y' if n == 1 else 'ies'}")


@cli.command()
@click.option("--older-than", "older_than", type=AgeParam(), default=None, envvar="SUTURE_RETENTION",
              show_envvar=True, metavar="AGE",
              help="Retention: also delete finished runs (journal, state snapshots, attempts, events, "
                   "questions) that last changed longer ago than AGE (30d, 12h, 90m, 3600s, 2w).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(RUN_STATUSES),
              help="With --older-than: the statuses to delete (repeatable; default succeeded, failed, "
                   "cancelled). A run a live attempt holds is never deleted.")
@click.option("--dry-run", is_flag=True, help="List what --older-than would delete; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def gc(ctx: click.Context, older_than: float | None, statuses: tuple[str, ...], dry_run: bool,
       as_json: bool) -> None:
    """Delete stored large values no journal or cache entry refers to any more; with --older-than
    (or SUTURE_RETENTION), first the finished runs past that age, so a store does not grow without
    bound. The cache has its own expiry (`suture cache clear --expired`); shared state is kept."""
    import time

    from .store.base import FINISHED

    if (statuses or dry_run) and older_than is None:
        raise click.UsageError("--status and --dry-run go with --older-than AGE (or SUTURE_RETENTION)")
    if "running" in statuses:
        raise click.UsageError("--status running: a running run is never deleted (stop it, then `suture reset` it)")
    store = _store(ctx)
    purged: list[str] = []
    if older_than is not None:
        before = time.time() - older_than
        chosen = tuple(statuses) or FINISHED
        progress = None if as_json or dry_run else (lambda n: console.print(f"  deleted {n} runs so far", style="dim"))
        purged = store.purge_runs(before, chosen, dry_run=dry_run, progress=progress)
        if dry_run:
            if as_json:
                _emit_json({"would_delete_runs": purged})
            else:
                say(console, f"would delete {len(purged)} run{'' if len(purged) == 1 else 's'} "
                             f"({', '.join(chosen)}; unchanged for {age_text(older_than)})")
                for run_id in purged[:50]:
                    say(console, f"  {run_id}")
                if len(purged) > 50:
                    say(console, f"  ... and {len(purged) - 50} more (--json lists all)")
            return
    n = store.gc()
    if as_json:
        _emit_json({"deleted_runs": len(purged), "deleted_blobs": n} if older_than is not None else {"deleted_blobs": n})
    else:
        if older_than is not None:
            say(console, f"deleted {len(purged)} finished run{'' if len(purged) == 1 else 's'} unchanged for "
                         f"{age_text(older_than)}")
        say(console, f"deleted {n} unreferenced blob{'' if n == 1 else 's'}"
                     + (" (the deleted runs' own go once past SUTURE_GC_GRACE)" if purged and not n else ""))


@cli.command()
@click.argument("run_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def reset(ctx: click.Context, run_id: str, yes: bool) -> None:
    """Forget a run's journal and attempts, so that running its id again starts it fresh.

    Its completed steps will run again (the global cache still serves cached ones). State it
    published stays. Refused while a live attempt holds the run.
    """
    store = _store(ctx)
    rec = store.get_run(run_id)
    if rec is None:
        raise click.ClickException(f"no run {run_id!r} in {store.url} (see `suture runs`)")
    if not yes:
        click.confirm(f"forget run {run_id} ({rec.status}, {rec.steps} journal entries)?", abort=True)
    n = store.reset_run(run_id)
    say(console, f"run {run_id} reset: {n} journal entries deleted; running it again starts it fresh")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List loaded plugins, where they come from and the hooks they implement."""
    from .manager import plugin_table

    rows = plugin_table()
    if as_json:
        _emit_json(rows)
        return
    table = Table(title="suture plugins (built-ins, then entry points of group 'suture', then code)")
    for col in ("name", "from", "hooks"):
        table.add_column(col, overflow="fold")
    for r in rows:
        hooks = ", ".join(h.removeprefix("suture_") for h in r["hooks"])
        table.add_row(cell(r["name"]), cell(r["origin"]), cell(hooks))
    console.print(table)


@cli.command()
@click.argument("run_id")
@click.option("--json", "answer_json", required=True, help="The answer as JSON (a string answer: '\"yes\"').")
@click.option("--question", "qid", default=None, help="Question id (default: the run's only pending question).")
@click.pass_context
def answer(ctx: click.Context, run_id: str, answer_json: str, qid: str | None) -> None:
    """Answer a suspended run's question; the run continues on its next attempt (`suture resume`)."""
    from .human import validate_answer

    store = _store(ctx)
    pending = store.questions(run_id=run_id, status="pending")
    if qid:
        pending = [q for q in pending if q.qid == qid]
    if not pending:
        raise click.ClickException(f"run {run_id!r} has no pending question{f' {qid!r}' if qid else ''} "
                                   f"(see `suture runs --waiting`)")
    if len(pending) > 1:
        raise click.ClickException("several questions are pending; answer one with " + " or ".join(
            f"{command('answer', run_id, '--question', q.qid, '--json')} '...'" for q in pending))
    q = pending[0]
    try:
        value = json.loads(answer_json)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"--json is not valid JSON: {exc}") from None
    schema = q.schema_ if q.schema_ != {"type": "string"} else None
    try:
        validate_answer(schema, value)
    except ValueError as exc:
        raise click.ClickException(f"answer rejected, the question stays pending: {exc}") from None
    store.question_answer(run_id, q.qid, value)
    from .manager import hook

    delivered = hook().suture_answer_given(run=store.get_run(run_id), question=q, answer=value)
    if delivered:  # an orchestrator waits for it (a paused Prefect flow run): it continues by itself
        say(console, f"answered {q.qid!r} of run {run_id}; {delivered}")
        return
    say(console, f"answered {q.qid!r} of run {run_id}; resume it with: ", command("resume", run_id))


def main() -> None:
    """Entry point of the ``suture`` console script."""
    from .manager import hook

    hook().suture_register_commands(cli=cli)
    cli(prog_name="suture")


if __name__ == "__main__":  # pragma: no cover
    main()

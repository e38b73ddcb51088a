"""The CLI prints what runs, people and errors wrote literally, quotes run ids in the commands it
suggests, and rejects a bad ``--status`` / ``--limit`` the same way on both stores.

Real subprocesses against real stores (SQLite files, and fresh schemas of this machine's PostgreSQL).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from suture.cli_text import RUN_STATUSES

#: rich markup (a closing tag that matches nothing, an install hint) and an emoji code
NASTY = "boom [/bold] pip install 'suture[prefect]' crunch_keyed:a: [red]not red[/red]"
#: a run id that runs `touch pwned` if a suggested command leaves it unquoted
WEIRD = "we/ird;id $(touch pwned) x"
PG_DSN = os.environ.get("SUTURE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

AGENT = '''
import json, os, sqlite3, sys
import suture

NASTY = {nasty!r}
HELD = []


@suture.step(name="fine")
def fine(i: int) -> int:
    return i


@suture.agent(name="literal", max_attempts=1)
def literal(n: int) -> str:
    fine(n)
    if os.environ.get("ASK"):
        return suture.ask("approve? " + NASTY)
    if os.environ.get("HOLD_LOCK"):  # another writer holds the store when the attempt ends
        conn = sqlite3.connect(os.environ["SUTURE_STORE_URL"].removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        HELD.append(conn)
    if os.environ.get("FAIL"):
        raise ValueError(NASTY)
    return "ok"


if __name__ == "__main__":
    try:
        print(json.dumps(literal.run(1, run_id=sys.argv[1])))
    except suture.Suspended as exc:
        sys.exit(exc.exit_code)
    except suture.SutureError:
        sys.exit(3)
'''


@pytest.fixture()
def agent(tmp_path):
    path = tmp_path / "literal_agent.py"
    path.write_text(AGENT.format(nasty=NASTY))
    return path


def run(env, *args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], check=False, env=env, capture_output=True, text=True,
                          timeout=90, cwd=cwd)


def suture_cli(env, *args, cwd=None):
    return run(env, "-m", "suture", *args, cwd=cwd)


def lines(proc) -> list[str]:
    return (proc.stdout + proc.stderr).splitlines()


def in_a_shell(env, cmd: str, cwd: Path):
    """Run a command line the CLI printed, as a user pasting it into sh would."""
    script = f'suture() {{ "{sys.executable}" -m suture "$@"; }}\n{cmd}'
    return subprocess.run(["sh", "-c", script], check=False, env=env, capture_output=True, text=True, timeout=90,
                          cwd=cwd)


def test_show_runs_and_resume_print_error_text_literally(child_env, agent):
    rid = "crunch_keyed:a:"
    assert run(dict(child_env, FAIL="1"), agent, rid).returncode == 3

    show = suture_cli(child_env, "show", rid)
    assert show.returncode == 0, show.stderr
    assert "MarkupError" not in show.stderr
    out = show.stdout.splitlines()
    assert out[0] == f"run {rid}  agent literal  status failed  attempts 1"
    assert any(NASTY in line for line in out)  # the whole error, on one line, as written
    assert "🅰" not in show.stdout

    listed = suture_cli(dict(child_env, COLUMNS="200"), "runs")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "literal" in line)
    assert rid in row and "🅰" not in listed.stdout

    # the resume error path: the run fails again and the CLI prints suture's error
    resumed = suture_cli(dict(child_env, FAIL="1"), "resume", rid)
    assert resumed.returncode == 1, resumed.stderr
    assert "Traceback" not in resumed.stderr
    (error,) = [line for line in lines(resumed) if line.startswith("error: ")]
    assert f"gave up after 1 failed attempt(s): [code/ValueError] ValueError: {NASTY}." in error
    assert f"run '{rid}' of agent 'literal'" in error


def test_runs_waiting_prints_questions_literally_and_a_quoted_answer_command(child_env, agent, tmp_path):
    asked = run(dict(child_env, ASK="1"), agent, WEIRD, cwd=tmp_path)
    assert asked.returncode == 75, asked.stderr

    waiting = suture_cli(dict(child_env, COLUMNS="300"), "runs", "--waiting", cwd=tmp_path)
    assert waiting.returncode == 0, waiting.stderr
    assert f"approve? {NASTY}" in waiting.stdout and "🅰" not in waiting.stdout
    (hint,) = [line for line in waiting.stdout.splitlines() if line.startswith("answer with: ")]
    suggested = hint.removeprefix("answer with: ")
    assert shlex.split(suggested) == ["suture", "answer", WEIRD, "--json", "..."]

    # pasted into a shell (with an answer in place of '...'), it answers this run and runs nothing else
    answered = in_a_shell(child_env, suggested.replace("'...'", "'\"yes\"'"), tmp_path)
    assert answered.returncode == 0, answered.stderr + answered.stdout
    assert not (tmp_path / "pwned").exists()
    (hint,) = [line for line in answered.stdout.splitlines() if "resume it with: " in line]
    suggested = hint.split("resume it with: ", 1)[1]
    assert shlex.split(suggested) == ["suture", "resume", WEIRD]

    resumed = in_a_shell(dict(child_env, ASK="1"), suggested, tmp_path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert resumed.stdout.strip() == "yes"  # the answer, replayed
    assert not (tmp_path / "pwned").exists()


def test_a_locked_store_at_attempt_end_names_the_write_that_failed(child_env, agent):
    rid = "lock[x]:a: run"
    assert run(dict(child_env, FAIL="1"), agent, rid).returncode == 3
    # attempt 2 runs its code, then another writer holds the store when the attempt is recorded
    resumed = suture_cli(dict(child_env, HOLD_LOCK="1", SUTURE_BUSY_TIMEOUT="0.3"), "resume", rid)
    assert resumed.returncode == 1, resumed.stderr + resumed.stdout
    (error,) = [line for line in lines(resumed) if line.startswith("error: ")]
    assert "stayed locked by another process" in error
    assert f"while ending attempt 2 of '{rid}'." in error
    assert error.endswith("Nothing was written.")


# ---- --status and --limit: the same clear errors on both stores --------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def any_env(request, tmp_path):
    """The environment of a fresh store on each backend: a SQLite file, or a PostgreSQL schema
    dropped afterwards."""
    from suture.config import close_stores

    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'suture.db'}"
    else:
        import psycopg

        try:
            psycopg.connect(PG_DSN, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            pytest.fail(f"PostgreSQL is not reachable at {PG_DSN} ({exc})")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        url = f"{PG_DSN}?schema={schema}"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, SUTURE_STORE_URL=url)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    yield env
    close_stores()
    if schema:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_bad_status_and_limit_are_clear_errors_on_both_stores(any_env, agent):
    assert run(dict(any_env, FAIL="1"), agent, "f1").returncode == 3
    assert run(dict(any_env, FAIL="1"), agent, "f2").returncode == 3
    assert run(any_env, agent, "ok1").returncode == 0

    bogus = suture_cli(any_env, "runs", "--status", "bogus")
    assert bogus.returncode == 2, bogus.stdout + bogus.stderr  # click's usage error, before the store
    assert "Invalid value for '--status': 'bogus' is not one of" in bogus.stderr
    for status in RUN_STATUSES:
        assert f"'{status}'" in bogus.stderr

    for args in (("runs", "--limit", "-1"), ("runs", "--limit", "0"), ("cache", "ls", "--limit", "-1"),
                 ("show", "f1", "--limit", "-1")):
        bad = suture_cli(any_env, *args)
        assert bad.returncode == 2, (args, bad.stdout + bad.stderr)
        assert f"Invalid value for '--limit': {args[-1]} is not in the range" in bad.stderr, args

    def listed(*args):
        proc = suture_cli(any_env, "runs", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return sorted(r["run_id"] for r in json.loads(proc.stdout))

    assert listed() == ["f1", "f2", "ok1"]
    assert listed("--status", "failed") == ["f1", "f2"]
    assert listed("--status", "succeeded", "--limit", "5") == ["ok1"]
    assert len(listed("--status", "failed", "--limit", "1")) == 1
    assert listed("--status", "suspended") == []


def test_the_status_choices_cover_every_status_the_library_writes():
    package = Path(__file__).resolve().parents[1] / "suture"
    written: set[str] = set()
    patterns = (r'\.finish\(\s*"([a-z-]+)"', r'release_run\([^)\n]*?,\s*"([a-z-]+)"', r'\.status\s*=\s*"([a-z-]+)"',
                r'status = "([a-z-]+)" if', r'status = "[a-z-]+" if [^\n]* else "([a-z-]+)"',
                r"VALUES \([^)]*'([a-z-]+)'", r'SCRATCH_STATUS = "([a-z-]+)"')
    for path in package.rglob("*.py"):
        text = path.read_text()
        for pattern in patterns:
            written.update(re.findall(pattern, text))
    assert {"running", "succeeded", "failed", "suspended", "interrupted", "retrying", "replay-check"} <= written
    assert written - {"pending", "answered"} <= set(RUN_STATUSES)  # questions' statuses are not runs'

"""The HTML run report (suture.report_html, ``suture report --html``): a killed-and-resumed run with an
in-process retried attempt, model usage, a cache hit and a failure the agent handled; its numbers are
build_report's (and the markdown's), every string the run wrote is escaped, and the page renders in a
real headless browser (Debian's chromium) with its key numbers readable from the DOM."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from html.parser import HTMLParser

import pytest

import suture
from suture.report import build_report
from suture.report_html import render_html
from suture.usage import describe

RUN = "kill&<b>resume</b>"
HOSTILE_STEP = "<script>alert('step')</script>"

AGENT = textwrap.dedent('''
    import os, sys
    import suture

    @suture.step
    def chat(q: str) -> str:
        suture.record_usage(model="gpt-4o", input_tokens=100, output_tokens=10, provider="openai")
        return q.upper()

    @suture.step(cache=True, name="report-html-embed")
    def embed(q: str) -> str:
        suture.record_usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=0)
        return q[::-1]

    @suture.step(name="<script>alert('step')</script>")
    def hostile(q: str) -> str:
        raise RuntimeError("<img src=x onerror=alert(1)> & <script>alert('msg')</script>")

    @suture.agent(name="warm")
    def warm(topic: str) -> str:
        return embed(topic)  # fills the cache the report's run hits

    @suture.agent(name="report-<agent>")
    def research(topic: str) -> str:
        out = [chat(topic)]
        try:
            hostile(topic)
        except suture.StepFailed as e:
            out.append("handled:" + e.failure.kind)
        out.append(chat(topic + "!"))
        flags = os.environ["FLAGS"]
        if not os.path.exists(flags + ".die"):
            open(flags + ".die", "w").close()
            os._exit(9)  # killed: the next process resumes the run
        out.append(embed(topic))
        if not os.path.exists(flags + ".net"):
            open(flags + ".net", "w").close()
            raise ConnectionError("the <upstream> dropped & gone")  # retried in the same process
        out.append(chat("last"))
        return "|".join(out)

    if __name__ == "__main__":
        agent = warm if sys.argv[1] == "warm" else research
        print(agent.run(sys.argv[2], run_id=sys.argv[3]))
''')

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium (.ci/run installs it)")


class Page(HTMLParser):
    """What the tests read back from a page: elements by id, journal rows, attempt rows, the text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, dict[str, str]] = {}
        self.entries: list[dict[str, str]] = []
        self.attempts: list[dict[str, str]] = []
        self.tags: dict[str, int] = {}
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "id" in a:
            self.ids[a["id"]] = a
        classes = a.get("class", "").split()
        if tag == "tr" and "entry" in classes:
            self.entries.append(a)
        if tag == "tr" and "attempt" in classes:
            self.attempts.append(a)

    def handle_data(self, data):
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


@pytest.fixture()
def killed_run(tmp_path, child_env, store):
    """Run ``RUN``: attempt 1 killed (SIGKILL-like ``os._exit``), attempt 2 a cache hit then a network
    failure retried in process, attempt 3 succeeds; a step failure handled by the agent on the way."""
    script = tmp_path / "report_agent.py"
    script.write_text(AGENT)
    env = dict(child_env, FLAGS=str(tmp_path / "flag"))

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True,
                              timeout=120)

    assert run("warm", "topic", "warm-1").returncode == 0
    first = run("research", "topic", RUN)
    assert first.returncode == 9, first.stderr
    second = run("research", "topic", RUN)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "TOPIC|handled:RuntimeError|TOPIC!|cipot|LAST"
    return store


def _check_numbers(page: Page, report) -> None:
    """The page's key numbers are build_report's."""
    ids = page.ids
    assert ids["run"]["data-run-id"] == RUN and ids["run"]["data-status"] == "succeeded"
    assert int(ids["attempts"]["data-attempts"]) == len(report.attempts) == 3
    assert int(ids["calls-live"]["data-live"]) == report.live
    assert int(ids["calls-replayed"]["data-replayed"]) == report.replayed
    assert int(ids["calls-cached"]["data-cached"]) == report.cached == 1
    assert int(ids["calls-saved"]["data-saved"]) == report.replayed + report.cached
    assert float(ids["seconds-saved"]["data-seconds"]) == pytest.approx(report.saved_seconds, rel=1e-5, abs=1e-9)
    assert int(ids["journal-entries"]["data-entries"]) == report.entries
    for kind in ("paid", "saved", "replayed", "cached"):
        row, want = ids[f"tokens-{kind}"], report.tokens[kind]
        assert (int(row["data-input"]), int(row["data-output"])) == (want["input"], want["output"]), kind
        assert float(row["data-cost"]) == pytest.approx(want["cost"], abs=1e-6), kind
    assert [(a["data-attempt"], a["data-status"]) for a in page.attempts] == [
        (str(a.attempt), a.status) for a in report.attempts]
    assert [a["data-failure"] for a in page.attempts] == ["infrastructure/crashed", "network/connection", ""]
    assert page.attempts[1]["data-decision"] == "retry"


def test_the_html_report_shows_build_report_s_numbers_and_escapes_what_the_run_wrote(killed_run):
    store = killed_run
    report = build_report(store, RUN)
    assert report.tokens["paid"]["input"] > 0 and report.tokens["replayed"]["input"] > 0
    assert report.tokens["cached"]["input"] == 1000  # the cache hit of attempt 2, saved by cache
    html = render_html(store, RUN)
    page = Page(html)
    _check_numbers(page, report)
    entries = store.list_entries(RUN)
    assert len(page.entries) == len(entries)
    assert {e["data-how"] for e in page.entries} == {"live", "cached", "failed"}
    assert sum(int(e["data-tokens"]) for e in page.entries) == sum(
        i + o for e in entries for i, o in (e.usage or {}).values())
    # user data is text: no element comes from a step name, an agent name, an error or the run id
    assert page.tags.get("script", 0) == 0 and page.tags.get("img", 0) == 0 and "<b>resume" not in html
    assert "&lt;script&gt;alert(&#x27;step&#x27;)&lt;/script&gt;" in html
    text = page.all_text
    assert HOSTILE_STEP in text and "report-<agent>" in text and RUN in text
    assert "<img src=x onerror=alert(1)> & <script>alert('msg')</script>" in text  # the handled failure
    assert "FAILURE [network/connection] (attempt 2): ConnectionError: the <upstream> dropped & gone" in text
    assert "retry — transient network failure" in text
    # a self-contained page: nothing is fetched
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html) and "@import" not in html
    assert html.startswith("<!DOCTYPE html>")


def test_markdown_and_html_show_the_same_key_numbers(killed_run):
    report = build_report(killed_run, RUN)
    md = report.to_markdown()
    page = Page(render_html(killed_run, RUN))
    m = re.search(r"calls replayed: (\d+), served from cache: (\d+), run live: (\d+)", md)
    assert m and tuple(map(int, m.groups())) == (int(page.ids["calls-replayed"]["data-replayed"]),
                                                 int(page.ids["calls-cached"]["data-cached"]),
                                                 int(page.ids["calls-live"]["data-live"]))
    assert f"({float(page.ids['seconds-saved']['data-seconds']):.2f}s of work)" in md
    assert f"tokens paid: {describe(report.tokens['paid'])}" in md
    html = render_html(killed_run, RUN)
    for kind in ("paid", "saved", "replayed", "cached"):
        text = describe(report.tokens[kind])
        assert text in md and re.search(rf'id="tokens-{kind}"[^>]*>.*?<td>{re.escape(text)}</td></tr>', html)


def test_a_fragment_for_an_orchestrator_page_and_a_capped_journal(store):
    @suture.step(name="tick")
    def tick(i: int) -> int:
        suture.record_usage(model="gpt-4o", input_tokens=1, output_tokens=1)
        return i

    @suture.agent(name="many")
    def many(n: int) -> int:
        return sum(tick(i) for i in range(n))

    assert many.run(60, run_id="many") == sum(range(60))
    part = render_html(store, "many", max_rows=25, fragment=True)
    assert part.startswith('<div class="suture-report"><style>') and "<html" not in part
    page = Page(part)
    assert len(page.entries) == 25
    assert page.ids["rows-capped"]["data-shown"] == "25" and page.ids["rows-capped"]["data-total"] == "60"
    assert "showing the first 25 of 60 journal entries" in page.all_text
    assert page.ids["tokens-paid"]["data-input"] == "60"
    with pytest.raises(KeyError):
        render_html(store, "no-such-run")


def test_questions_and_answers_are_shown_as_text(store):
    @suture.agent(name="asker")
    def asker() -> str:
        return suture.ask("approve <b>$10</b> & <script>q()</script>?")

    with pytest.raises(suture.Suspended):
        asker.run(run_id="asked")
    pending = Page(render_html(store, "asked"))
    assert pending.ids["run"]["data-status"] == "suspended" and "approve <b>$10</b>" in pending.all_text
    assert "waiting for an answer to ask#0" in pending.all_text  # the suspend event
    store.question_answer("asked", "ask#0", "<script>answer()</script>")
    assert asker.run(run_id="asked") == "<script>answer()</script>"
    html = render_html(store, "asked")
    page = Page(html)
    assert page.tags.get("script", 0) == 0 and "<b>$10" not in html and "&lt;b&gt;$10&lt;/b&gt;" in html
    assert '"<script>answer()</script>"' in page.all_text
    assert {e["data-how"] for e in page.entries} == {"answered"}


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed image data of a PNG (its IDAT chunks)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@needs_chromium
def test_the_page_renders_in_headless_chromium(killed_run, tmp_path):
    out = tmp_path / "report.html"
    out.write_text(render_html(killed_run, RUN), encoding="utf-8")
    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", out.as_uri())
    data = shot.read_bytes()
    width, height, pixels = _png_pixels(data)
    assert (width, height) == (1280, 2000) and len(data) > 30_000  # a rendered page, not a blank one
    assert len(set(pixels)) > 64  # text, badges and bars: many colours
    dom = _chromium(tmp_path, "--dump-dom", out.as_uri()).stdout
    page = Page(dom)
    _check_numbers(page, build_report(killed_run, RUN))  # what the browser built from the page
    assert page.tags.get("script", 0) == 0 and HOSTILE_STEP in page.all_text
    assert len(page.entries) == len(killed_run.list_entries(RUN))


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "suture", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_report_markdown_html_and_errors(killed_run, child_env, tmp_path):
    md = _cli(child_env, "report", RUN)
    assert md.returncode == 0, md.stderr
    assert md.stdout == build_report(killed_run, RUN).to_markdown()
    out = tmp_path / "out.html"
    wrote = _cli(child_env, "report", RUN, "--html", str(out))
    assert wrote.returncode == 0, wrote.stderr
    assert str(out) in wrote.stdout
    _check_numbers(Page(out.read_text(encoding="utf-8")), build_report(killed_run, RUN))
    piped = _cli(child_env, "report", RUN, "--html", "-")
    assert piped.returncode == 0 and piped.stdout.startswith("<!DOCTYPE html>")
    _check_numbers(Page(piped.stdout), build_report(killed_run, RUN))
    missing = _cli(child_env, "report", "nope", "--html", str(tmp_path / "x.html"))
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr and "suture runs" in missing.stderr
    assert not (tmp_path / "x.html").exists()
    bad = _cli(child_env, "report", RUN, "--html", str(tmp_path / "no-such-dir" / "r.html"))
    assert bad.returncode == 1 and "cannot write the report to" in bad.stderr and "No such file" in bad.stderr
    assert "Traceback" not in bad.stderr + missing.stderr

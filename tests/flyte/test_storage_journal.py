"""The journal in an orchestrator's storage (suture.adapters._storage_journal), on a local path that
stands in for an object store: what a reader takes, what a writer writes, and when."""

from __future__ import annotations

import json
import time

import suture
from suture.adapters._checkpoint import export_checkpoint
from suture.adapters._storage_journal import JournalWriter, StorageJournal, run_prefix


def _doc(run_id: str, n: int) -> bytes:
    return json.dumps({"format": "suture-journal-v2", "run_id": run_id, "entries": [["", "s", str(i), i, "f",
                       "step", "live", "1", False, "json", 0.0] for i in range(n)]}).encode()


def test_the_reader_takes_the_highest_readable_ordinal_of_its_own_run(tmp_path):
    j = StorageJournal(run_prefix(str(tmp_path), "r/1"), "r/1")
    assert j.latest() is None  # nothing yet: no error
    j.save(1001, _doc("r/1", 2))
    j.save(2001, _doc("r/1", 5))
    j.save(3001, b'{"format": "suture-journal-v2", "run_id": "r/1", "entr')  # torn by a dying pod
    j.save(4001, _doc("someone/else", 9))  # not this run's document
    found = j.latest()
    assert found is not None and found[0] == 2001 and len(found[2]["entries"]) == 5
    assert j.latest(below=2001)[0] == 1001
    # another run's prefix is another place, even for ids that differ only in punctuation
    assert run_prefix(str(tmp_path), "r/1") != run_prefix(str(tmp_path), "r-1")


def test_the_writer_writes_in_the_background_at_most_once_per_interval_and_a_final_state(tmp_path, store):
    @suture.step(name="sj-step")
    def work(i: int) -> int:
        return i

    @suture.agent(name="sj-agent")
    def agent(n: int) -> int:
        return sum(work(i) for i in range(n))

    agent.run(0, run_id="sj")  # the run exists; its journal is empty
    j = StorageJournal(run_prefix(str(tmp_path), "sj"), "sj")
    writer = JournalWriter(j, store, ordinal=7, interval=0.5)
    with writer:
        t0 = time.monotonic()
        agent.run(0, run_id="sj-other")  # steps of another run do not mark this journal dirty
        time.sleep(0.2)
        assert writer.writes == 0
    writer.close()
    assert writer.writes == 1 and writer.error is None and time.monotonic() - t0 < 5
    assert j.ordinals() == [7] and j.latest()[2]["run_id"] == "sj"
    assert json.loads(j.fs.cat_file(j.key(7))) == json.loads(export_checkpoint(store, "sj"))


def test_steps_of_the_run_trigger_throttled_background_writes(tmp_path, store):
    @suture.step(name="sj-slow")
    def slow(i: int) -> int:
        time.sleep(0.1)
        return i

    j = StorageJournal(run_prefix(str(tmp_path), "sj-live"), "sj-live")
    writer = JournalWriter(j, store, ordinal=1, interval=0.4)

    @suture.agent(name="sj-live-agent")
    def live(n: int) -> int:
        return sum(slow(i) for i in range(n))

    with writer:
        assert live.run(12, run_id="sj-live") == sum(range(12))  # ~1.2 s of steps
        during = writer.writes
    writer.close()
    assert 1 <= during <= 4  # throttled to one per 0.4 s, not one per step (12)
    assert len(j.latest()[2]["entries"]) == 12  # the final write has every step

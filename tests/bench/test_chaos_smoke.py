"""Smoke test of the chaos benchmark (bench/chaos): one seed, suture local and plain Python only,
through the benchmark's own Python API, so the benchmark does not rot. Needs no matplotlib and no
peer package. The benchmark itself is not a test: `python bench/chaos/run.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "bench" / "chaos"
SEED = 0  # a read timeout, a SIGTERM preemption, and a SIGKILL of the whole process mid-call

pytest.importorskip("openai")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    sys.path[:0] = [str(CHAOS), str(ROOT / "bench")]
    try:
        import run as chaos_run
        from faults import describe, schedule

        assert describe(schedule(SEED)) == "timeout@c048, sigterm@c039, sigkill@c024+inflight"
        out = chaos_run.run([SEED], ["g", "a"], progress=False, base=tmp_path_factory.mktemp("chaos"), write=False)
    finally:
        del sys.path[:2]
    return {r["contender"]: r for runs in out["runs"].values() for r in runs}


@pytest.mark.timeout(120)
def test_suture_local_finishes_and_pays_no_completed_call_twice(results):
    g = results["g"]
    assert g["finished"], g
    assert len(g["attempts"]) >= 3, "the preemption and the SIGKILL each end an attempt"
    assert g["completed_paid_twice"] == 0, g
    assert g["unique_calls"] >= 99
    assert g["calls_paid"] == g["unique_calls"] + g["in_flight_repaid"]


@pytest.mark.timeout(120)
def test_plain_retries_pay_completed_calls_again(results):
    a = results["a"]
    assert a["finished"], a
    assert a["completed_paid_twice"] > 20, a  # the measure sees re-paid work when there is no journal

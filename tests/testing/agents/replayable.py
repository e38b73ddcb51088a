"""Agents for the assert_replays tests, importable by name (isolated attempts load them in a
child process): one that reads time through suture.now(), one that reads time.time()."""

from __future__ import annotations

import time

import suture


@suture.step
def stamp(t: float) -> str:
    return f"stamped at {t:.6f}"


@suture.step
def shout(text: str) -> str:
    return text.upper()


@suture.agent(isolate=True)
def isolated_good(topic: str) -> str:
    return shout(stamp(suture.now())) + " " + topic


@suture.agent(isolate=True)
def isolated_bad(topic: str) -> str:
    return shout(stamp(time.time())) + " " + topic


@suture.agent(isolate=True, strict=True)
def isolated_strict(topic: str) -> str:
    return shout(stamp(time.time())) + " " + topic

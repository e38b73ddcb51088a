"""How SQL stores encode the JSON columns and rows they share (no SQL here)."""

from __future__ import annotations

import json
from typing import Any

from ..models import RunRecord
from .base import CALL_KEYS


def dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def load(text: Any) -> Any:
    return None if text is None else json.loads(text)


def blob(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def run_record(row: tuple) -> RunRecord:
    return RunRecord(
        run_id=row[0], agent=row[1], status=row[2], created_at=row[3], updated_at=row[4],
        attempts=row[5] or 0, entry=load(row[6]), error=row[7], lease_owner=row[8],
        labels=load(row[9]) or {}, call_keys=row[10] if len(row) > 10 and row[10] is not None else CALL_KEYS,
    )

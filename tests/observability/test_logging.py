"""JSON logs: one object per line, `extra=` fields at the top level, the
traceback kept, and a handler added once however often logging is set up."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ctsynth.observability.logging import JsonFormatter, configure_logging


def record(message: str = "call", **extra) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "ctsynth.rpc", "levelname": "INFO", "msg": message, **extra})
    made.created = 0.0
    return made


def test_extra_fields_are_top_level_keys_of_one_json_line():
    line = JsonFormatter().format(record("call %s", args=("done",), request_id="ab12", code="OK", duration_ms=1.5))
    assert "\n" not in line
    assert json.loads(line) == {"ts": "1970-01-01T00:00:00.000+00:00", "level": "info", "logger": "ctsynth.rpc",
                                "msg": "call done", "request_id": "ab12", "code": "OK", "duration_ms": 1.5}


def test_a_traceback_travels_in_the_same_line():
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        failed = record("unhandled error", exc_info=sys.exc_info())
    entry = json.loads(JsonFormatter().format(failed))
    assert entry["exc"].startswith("Traceback") and entry["exc"].rstrip().endswith("RuntimeError: boom\nsecond line")


def test_values_json_cannot_hold_are_written_as_text():
    entry = json.loads(JsonFormatter().format(record(path=Path("/srv/store"))))
    assert entry["path"] == "/srv/store"


def test_configuring_twice_adds_one_handler(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    configure_logging("debug")
    configure_logging("warning")
    assert [type(h.formatter) for h in root.handlers] == [JsonFormatter] and root.level == logging.WARNING

"""Who is writing a store right now, and how far it got: a small note beside the store file.

`<db>.writer.json` holds the writer's command, pid, start time and progress; `refresh` rewrites it
(atomically) as it plans and commits, and removes it when it ends. `status` shows it, and a reader
that runs out of patience names the writer in its error. A note whose pid is gone means nobody.
Light on purpose: read-only commands import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from store.atomic import write_json_atomic
from store.follow_state import _alive


def note_path(db_path: Path) -> Path:
    return Path(str(db_path) + ".writer.json")


class WriterNote:
    """The note of one writing process; `update()` as it goes, `close()` at the end."""

    EVERY_S = 0.2

    def __init__(self, db_path: Path, command: str) -> None:
        self.path = note_path(db_path)
        self.state: dict[str, Any] = {"command": command, "pid": os.getpid(),
                                      "since": datetime.now(UTC).isoformat(timespec="seconds"),
                                      "updated": time.time(), "progress": "",
                                      "note": uuid.uuid4().hex[:12]}  # this note, among a process's
        self._write()

    def update(self, progress: str) -> None:
        """Record `progress`; written at most every `EVERY_S` (a whole market commits hundreds of
        days a second, and a reader wants the gist, not each one)."""
        now = time.time()
        self.state["progress"] = progress
        if now - self.state["updated"] >= self.EVERY_S:
            self.state["updated"] = now
            self._write()

    def _write(self) -> None:
        with contextlib.suppress(OSError):  # a read-only directory loses the note, not the refresh
            write_json_atomic(self.path, self.state)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # another writer's note, or none readable
            current = json.loads(self.path.read_text())
            if current.get("note") == self.state["note"]:  # not another writer's, in this process or not
                self.path.unlink()


def active_writer(db_path: Path) -> dict[str, Any] | None:
    """The writer's note, if its process is alive."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        state = json.loads(note_path(db_path).read_text())
        if _alive(int(state["pid"])):
            return {key: value for key, value in state.items() if key != "note"}
    return None

"""Files replaced whole: written under a hidden name beside the target, then renamed over it.

The hidden name is unique per writer (pid and a random part), not only per process: two writers in
one process (threads, two refreshes of one store) writing the same target through one temp name
interleave their bytes into it, and the rename then publishes the mix. Light on purpose:
read-only commands import it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def temp_beside(path: Path) -> Path:
    """A hidden name in `path`'s directory that no other writer, in any process, uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    temp = temp_beside(path)
    try:
        temp.write_text(json.dumps(data))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)

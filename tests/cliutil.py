"""The CLI in-process (`run`), with the environment the `env` fixture of conftest.py gives it."""

from __future__ import annotations

from click.testing import CliRunner

import cli


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr

"""scripts/dotenv.sh: a .env fills in what the environment does not set; what it sets wins."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("TIME_SCALE", "LOG_LEVEL", "QUOTED", "NOTE", "CRLF")


def loaded(dotenv: Path, **environment: str) -> dict[str, str]:
    script = f'. scripts/dotenv.sh; mc_load_dotenv "{dotenv}"; ' + "; ".join(
        f'printf "%s=[%s]\\n" {name} "${{{name}-unset}}"' for name in NAMES
    )
    env = {k: v for k, v in os.environ.items() if k not in NAMES} | environment
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(
        b"# every default, as .env.example spells them\n"
        b"TIME_SCALE=1.0\n"
        b"export LOG_LEVEL=INFO\n"
        b'QUOTED="a b c"\n'
        b'  NOTE="please export now"\n'
        b"CRLF=x\r\n"
    )

    assert loaded(dotenv, TIME_SCALE="0.1") == {
        "TIME_SCALE": "[0.1]",
        "LOG_LEVEL": "[INFO]",
        "QUOTED": "[a b c]",
        "NOTE": "[please export now]",
        "CRLF": "[x]",
    }
    assert loaded(dotenv, LOG_LEVEL="DEBUG", QUOTED="")["LOG_LEVEL"] == "[DEBUG]"
    assert loaded(dotenv, QUOTED="")["QUOTED"] == "[]"  # set, though empty: still the environment's

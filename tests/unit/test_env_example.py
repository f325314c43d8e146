"""`.env.example` documents every setting, with the default the code really has."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def example_values() -> dict[str, str]:
    pairs = re.findall(r"^([A-Z_]+)=(.*)$", EXAMPLE.read_text(), flags=re.MULTILINE)
    return dict(pairs)


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    assert set(example_values()) == {name.upper() for name in Settings.model_fields}


def test_env_example_values_are_the_defaults() -> None:
    defaults = Settings(_env_file=None)
    from_example = Settings(_env_file=EXAMPLE)
    assert from_example == defaults

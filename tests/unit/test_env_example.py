"""`.env.example` documents every setting, with the default the code really has."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def example_values() -> dict[str, str]:
    pairs = re.findall(r"^([A-Z0-9_]+)=(.*)$", EXAMPLE.read_text(), flags=re.MULTILINE)
    return dict(pairs)


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    assert set(example_values()) == {name.upper() for name in Settings.model_fields}


def test_env_example_values_are_the_defaults() -> None:
    defaults = Settings(_env_file=None)
    from_example = Settings(_env_file=EXAMPLE)
    assert from_example == defaults


def test_the_readme_configuration_table_lists_every_setting_with_its_default() -> None:
    readme = (EXAMPLE.parent / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Layout")]
    for name, default in example_values().items():
        shown = f"`{default}`" if default else "(empty)"
        assert f"| `{name}` | {shown} |" in table, name

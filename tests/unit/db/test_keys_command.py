"""`python -m db keys`: secrets and limit options, checked without PostgreSQL."""

from __future__ import annotations

import pytest

from core.errors import BadRequest
from db.__main__ import _limit, main
from db.keys import KEY_PREFIX_LEN, UNCHANGED, new_secret


def test_new_secrets_are_recognisable_random_and_long() -> None:
    secrets = {new_secret() for _ in range(100)}

    assert len(secrets) == 100
    assert all(secret.startswith("mc_") and len(secret) == 46 for secret in secrets)
    # The stored prefix tells keys apart without giving much of the secret away.
    assert KEY_PREFIX_LEN == 8


@pytest.mark.parametrize(
    ("raw", "limit"), [(None, UNCHANGED), ("default", None), ("1", 1), ("250", 250)]
)
def test_limit_options_are_positive_integers_or_default(raw: str | None, limit: object) -> None:
    assert _limit(raw, "--max-cps") == limit


@pytest.mark.parametrize("raw", ["0", "-1", "1.5", "abc", "", " 3", "٣", "DEFAULT"])
def test_other_limits_are_refused_naming_the_option(raw: str) -> None:
    with pytest.raises(BadRequest) as refused:
        _limit(raw, "--max-concurrent")

    assert refused.value.message == (
        f"--max-concurrent must be a positive integer or 'default', not {raw!r}"
    )


def test_limits_beyond_a_postgresql_integer_are_refused() -> None:
    assert _limit("2147483647", "--max-cps") == 2147483647
    with pytest.raises(BadRequest) as refused:
        _limit("2147483648", "--max-cps")

    assert refused.value.message == "--max-cps must be at most 2147483647, not 2147483648"


def test_a_bad_limit_is_reported_before_postgresql_is_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")

    assert main(["keys", "set-limits", "acme", "--max-concurrent", "0"]) == 1

    assert capsys.readouterr().err == (
        "mock-comms: --max-concurrent must be a positive integer or 'default', not '0'\n"
    )

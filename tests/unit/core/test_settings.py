"""The settings object: the original service's defaults and names, DSNs, and refused values."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_defaults_match_the_original_service() -> None:
    settings = Settings(_env_file=None)

    assert settings.port == 3000
    assert settings.max_concurrent_calls_per_key == 3
    assert settings.max_cps_per_key == 2
    assert settings.valid_api_keys == ["test-api-key-1", "test-api-key-2", "demo-key"]
    assert settings.answer_probability == 0.7
    assert settings.time_scale == 1.0


def test_default_delays_match_the_original_service() -> None:
    settings = Settings(_env_file=None)

    assert (settings.ring_delay_min_ms, settings.ring_delay_max_ms) == (1_000, 2_000)
    assert (settings.answer_delay_min_ms, settings.answer_delay_max_ms) == (3_000, 5_000)
    assert (settings.talk_delay_min_ms, settings.talk_delay_max_ms) == (2_000, 4_000)
    assert (settings.unanswered_delay_min_ms, settings.unanswered_delay_max_ms) == (1_000, 2_000)


def test_original_variable_names_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("MAX_CONCURRENT_CALLS_PER_KEY", "5")
    monkeypatch.setenv("MAX_CPS_PER_KEY", "4")
    monkeypatch.setenv("TIME_SCALE", "0.01")

    settings = Settings(_env_file=None)

    assert settings.port == 8080
    assert settings.max_concurrent_calls_per_key == 5
    assert settings.max_cps_per_key == 4
    assert settings.time_scale == 0.01


def test_valid_api_keys_are_split_from_a_comma_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALID_API_KEYS", "alpha,beta,gamma")

    assert Settings(_env_file=None).valid_api_keys == ["alpha", "beta", "gamma"]


def test_valid_api_keys_drop_spaces_and_empty_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALID_API_KEYS", " alpha , beta,, gamma ,")

    assert Settings(_env_file=None).valid_api_keys == ["alpha", "beta", "gamma"]


def test_valid_api_keys_given_as_a_string_argument_are_split() -> None:
    assert Settings(_env_file=None, valid_api_keys="one,two").valid_api_keys == ["one", "two"]


def test_cors_origins_are_none_by_default_and_split_from_a_comma_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).cors_origins == []
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com, http://localhost:5173")

    assert Settings(_env_file=None).cors_origins == [
        "https://app.example.com",
        "http://localhost:5173",
    ]


@pytest.mark.parametrize(
    "origin", ["https://app.example.com/", "app.example.com", "https://a.example.com/path"]
)
def test_a_cors_origin_that_no_browser_sends_is_refused_naming_it(origin: str) -> None:
    """A trailing slash or a path would match no request's Origin: said at start, not a
    silent refusal in every browser."""
    with pytest.raises(ValidationError, match="CORS_ORIGINS holds"):
        Settings(_env_file=None, cors_origins=origin)


def test_database_url_wins_over_postgres_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@pg.internal:6543/calls")
    monkeypatch.setenv("POSTGRES_HOST", "elsewhere")
    monkeypatch.setenv("POSTGRES_PASSWORD", "other")

    assert Settings(_env_file=None).dsn == "postgresql://app:secret@pg.internal:6543/calls"


def test_postgres_parts_build_the_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db")
    monkeypatch.setenv("POSTGRES_PORT", "6543")
    monkeypatch.setenv("POSTGRES_DB", "calls")
    monkeypatch.setenv("POSTGRES_USER", "app")
    monkeypatch.setenv("POSTGRES_PASSWORD", "secret")

    assert Settings(_env_file=None).dsn == "postgresql://app:secret@db:6543/calls"


def test_default_dsn_points_at_local_postgres() -> None:
    assert (
        Settings(_env_file=None).dsn
        == "postgresql://postgres:postgres@localhost:5432/mock_communications"
    )


def test_postgres_password_is_quoted_in_the_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db")
    monkeypatch.setenv("POSTGRES_USER", "app user")
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss:w rd?#")

    dsn = Settings(_env_file=None).dsn

    assert dsn == "postgresql://app%20user:p%40ss%3Aw%20rd%3F%23@db:5432/mock_communications"
    parts = urlsplit(dsn)
    assert parts.hostname == "db"
    assert unquote(parts.password or "") == "p@ss:w rd?#"


def test_bug_postgres_password_with_a_slash_keeps_the_dsn_parseable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # BUG (core/settings.py, dsn): quote() keeps "/" unescaped by default, so a password with a
    # slash ends the authority early; urlsplit (and asyncpg's DSN parser) then misread the
    # host, port and password.
    monkeypatch.setenv("POSTGRES_HOST", "db")
    monkeypatch.setenv("POSTGRES_PASSWORD", "se/cret")

    parts = urlsplit(Settings(_env_file=None).dsn)

    assert parts.hostname == "db"
    assert unquote(parts.password or "") == "se/cret"


def test_redis_url_wins_over_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("REDIS_HOST", "elsewhere")
    monkeypatch.setenv("REDIS_PORT", "1234")

    assert Settings(_env_file=None).redis_dsn == "redis://cache.internal:6380/2"


def test_redis_host_and_port_build_the_redis_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "cache")
    monkeypatch.setenv("REDIS_PORT", "6380")

    assert Settings(_env_file=None).redis_dsn == "redis://cache:6380/0"


@pytest.mark.parametrize("stage", ["ring", "answer", "talk", "unanswered"])
def test_min_delay_above_its_max_is_refused(stage: str) -> None:
    with pytest.raises(ValidationError, match=f"{stage}_delay_min_ms"):
        Settings(_env_file=None, **{f"{stage}_delay_min_ms": 9_000, f"{stage}_delay_max_ms": 10})


def test_min_delay_above_its_max_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RING_DELAY_MIN_MS", "3000")

    with pytest.raises(ValidationError, match="ring_delay_min_ms"):
        Settings(_env_file=None)


def test_negative_min_delay_is_refused() -> None:
    with pytest.raises(ValidationError, match="talk_delay_min_ms"):
        Settings(_env_file=None, talk_delay_min_ms=-1)


def test_equal_min_and_max_delay_is_accepted() -> None:
    settings = Settings(_env_file=None, talk_delay_min_ms=2_500, talk_delay_max_ms=2_500)

    assert settings.talk_delay_min_ms == settings.talk_delay_max_ms == 2_500


@pytest.mark.parametrize("time_scale", ["0", "-1", "-0.5"])
def test_time_scale_not_above_zero_is_refused(
    monkeypatch: pytest.MonkeyPatch, time_scale: str
) -> None:
    monkeypatch.setenv("TIME_SCALE", time_scale)

    with pytest.raises(ValidationError, match="time_scale"):
        Settings(_env_file=None)


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_answer_probability_outside_zero_to_one_is_refused(probability: float) -> None:
    with pytest.raises(ValidationError, match="answer_probability"):
        Settings(_env_file=None, answer_probability=probability)


@pytest.mark.parametrize(
    ("time_scale", "ms", "scaled"),
    [
        (1.0, 1_500, 1_500),
        (0.01, 1_500, 15),
        (0.01, 3_333.3, 33),
        (0.05, 2_000, 100),
        (2.0, 250, 500),
        (0.01, -100, 0),
    ],
)
def test_scaled_ms_multiplies_by_the_time_scale_as_whole_ms(
    time_scale: float, ms: float, scaled: int
) -> None:
    result = Settings(_env_file=None, time_scale=time_scale).scaled_ms(ms)

    assert result == scaled
    assert isinstance(result, int)

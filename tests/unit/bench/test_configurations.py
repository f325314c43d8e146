"""The configurations a run measures: what each sets, and what it leaves at the default."""

from __future__ import annotations

from bench.configurations import DEFAULT, TUNED_SETTINGS, tuned


def test_the_default_configuration_sets_nothing_and_runs_through_scripts_runs_runner() -> None:
    assert DEFAULT.settings == {}
    assert DEFAULT.runner == "procfile"
    assert not DEFAULT.hold_workers
    assert DEFAULT.setting("LOG_LEVEL") == "INFO"
    assert DEFAULT.int_setting("MAX_STREAMS_PER_KEY") == 100
    assert DEFAULT.describe().endswith("all defaults")


def test_the_tuned_configuration_takes_overrides_and_holds_workers_unless_asked() -> None:
    config = tuned({"TIME_SCALE": "0.1"}, workers=3, lifecycle_during=False)

    assert config.settings == TUNED_SETTINGS | {"TIME_SCALE": "0.1"}
    assert config.int_setting("MAX_EVENTS_PER_SECOND_PER_KEY") == 1_000_000
    assert (config.workers, config.hold_workers) == (3, True)
    assert not tuned({}, 2, lifecycle_during=True).hold_workers

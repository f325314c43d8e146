"""wrk's scripts and the figures read back from its summary line."""

from __future__ import annotations

import pytest

from bench.wrk import MARK, lua_script, parse

SUMMARY = (
    MARK + '{"requests":3000,"duration_us":2000000,"bytes":1,"connect":0,"read":1,"write":0,'
    '"status":10,"timeout":2,"mean_us":900.0,"stdev_us":1.0,"max_us":9000,"p50_us":800,'
    '"p75_us":1000,"p90_us":1500,"p99_us":4000,"p999_us":8000}'
)


def test_the_summary_line_gives_rates_latencies_and_errors() -> None:
    result = parse("Running 2s test\n" + SUMMARY + "\n", connections=64, threads=2)

    assert result.requests_per_s == 1500
    # 2xx answers only: neither the 10 non-2xx nor the 2 timeouts count.
    assert result.ok_per_s == (3000 - 10 - 2) / 2
    assert result.errors == 10 + 1 + 2
    assert result.latency_ms["p99"] == 4.0


def test_no_summary_line_means_the_script_failed() -> None:
    with pytest.raises(RuntimeError, match="no summary"):
        parse("PANIC: unprotected error in call to Lua API", 64, 2)


def test_one_path_and_no_rotation_is_a_static_request() -> None:
    script = lua_script("GET", "/calls/x", headers={"Authorization": "Bearer k"})

    assert "wrk.path = [===[/calls/x]===]" in script
    assert "request = function()" not in script


def test_rotation_gives_each_request_the_next_key() -> None:
    script = lua_script(
        "POST", "/events", body="{}", rotate=("Authorization", ["Bearer a", "Bearer b"])
    )

    assert "local rotating = {\n  [===[Bearer a]===],\n  [===[Bearer b]===],\n}" in script
    assert "wrk.headers[ [===[Authorization]===] ] = rotating[(i % #rotating) + 1]" in script
    assert "return wrk.format(nil, paths[(i % #paths) + 1])" in script

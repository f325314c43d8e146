"""The configurations a benchmark run measures, each named in every figure it gives:

- `tuned`: the bench's own. It starts the API, N workers and the scheduler itself, with the
  lifecycle compressed (TIME_SCALE 0.05), logs at WARNING, the per-process caps that would
  refuse the load raised by settings, and the workers held (SIGSTOP) during the `POST /calls`
  figures so that those are the API's own.
- `default`: what users run. scripts/run's runner (devstack/runner.py with the Procfile, as
  `scripts/run web worker scheduler` starts it), every setting at its default (LOG_LEVEL INFO,
  one worker, TIME_SCALE 1), the workers running throughout; limits raised only per key, through
  the keys' own limits, and a load that one key's caps would refuse spread over several keys.

Both run on stores of the run's own (a fresh database, a private redis-server) and write the
recordings under the system's temp dir (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.settings import Settings

# What the tuned platform runs with unless --set says otherwise: the lifecycle compressed
# twenty times (a simulated call lives 0.3 to 0.55 s), quiet logs, and the per-process caps that
# would otherwise refuse the load itself (streams per key, events per second per key).
TUNED_SETTINGS = {
    "TIME_SCALE": "0.05",
    "LOG_LEVEL": "WARNING",
    "MAX_STREAMS_PER_KEY": "1000000",
    "MAX_EVENTS_PER_SECOND_PER_KEY": "1000000",
}
# The Procfile's processes that scripts/run starts and the bench measures (rq-dashboard does
# nothing until someone browses it, and it listens on a fixed port another run may hold).
PROCFILE_PROCESSES = ("web", "worker", "scheduler")


@dataclass(frozen=True)
class Configuration:
    name: str
    # How the platform's processes start: "direct" (the bench runs each) or "procfile" (the
    # Procfile, through scripts/run's runner); "external" for --base-url.
    runner: Literal["direct", "procfile", "external"]
    # The settings it sets; everything else is the platform's default.
    settings: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    # Hold the workers (SIGSTOP) during the POST /calls figures.
    hold_workers: bool = False

    def setting(self, name: str) -> str:
        """A setting's value in this configuration: its own, else the platform's default."""
        if name in self.settings:
            return self.settings[name]
        return str(Settings.model_fields[name.lower()].default)

    def int_setting(self, name: str) -> int:
        return int(self.setting(name))

    def describe(self) -> str:
        if self.runner == "external":
            return "a running platform at --base-url"
        how = (
            f"scripts/run's runner with the Procfile ({', '.join(PROCFILE_PROCESSES)})"
            if self.runner == "procfile"
            else f"api, {self.workers} worker(s), scheduler started by the bench"
        )
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items()) or "all defaults"
        held = "; workers held during POST /calls" if self.hold_workers else ""
        return f"{how}; {settings}{held}"


def tuned(overrides: dict[str, str], workers: int, lifecycle_during: bool) -> Configuration:
    return Configuration(
        "tuned",
        "direct",
        TUNED_SETTINGS | overrides,
        workers=workers,
        hold_workers=not lifecycle_during,
    )


DEFAULT = Configuration("default", "procfile")
EXTERNAL = Configuration("external", "external")

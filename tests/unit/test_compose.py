"""docker-compose.yml, read (no Docker engine runs here): the recordings live in MinIO, whose
bucket is made before any process of the platform starts, so a Compose deployment is ready for
more hosts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
PLATFORM = ("api", "worker", "scheduler")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_process_of_the_platform_keeps_recordings_in_minio(services: dict) -> None:
    for name in PLATFORM:
        env = services[name]["environment"]
        assert env["S3_BUCKET"], name
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000", name
        # Owners follow the signed URLs from the host: MinIO's published port.
        assert env["S3_PUBLIC_ENDPOINT_URL"] == "${S3_PUBLIC_ENDPOINT_URL:-http://localhost:9000}"
        assert "9000:9000" in services["minio"]["ports"]
        # The store's own credentials, as botocore reads them.
        assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
        assert (
            env["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
        )
        # No local directory of recordings to share between containers.
        assert "volumes" not in services[name] or not any(
            "/app/data" in volume for volume in services[name]["volumes"]
        )


def test_the_settings_compose_sets_are_the_platforms(services: dict) -> None:
    known = {name.upper() for name in Settings.model_fields}
    credentials = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for name in PLATFORM:
        assert set(services[name]["environment"]) - known <= credentials, name


def test_minio_is_checked_healthy_and_its_password_must_be_set(services: dict) -> None:
    minio = services["minio"]
    assert re.fullmatch(r"minio/minio:RELEASE\.[0-9TZ-]+", minio["image"])
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert minio["environment"]["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD:?")
    assert any(volume.endswith(":/data") for volume in minio["volumes"])


def test_the_bucket_is_made_once_minio_is_healthy_and_before_the_platform_starts(
    services: dict,
) -> None:
    bucket = services["recordings-bucket"]
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert bucket["restart"] == "no"
    assert bucket["environment"]["BUCKET"] == services["api"]["environment"]["S3_BUCKET"]
    script = bucket["entrypoint"][-1]
    # $$ is Compose's escape: the container's shell expands the variables.
    assert 'mc mb --ignore-existing "store/$$BUCKET"' in script
    assert "mc alias set store http://minio:9000" in script
    # An mc that fails (a wrong password) fails the one-shot, and the platform does not start.
    assert "exit 0" not in script and "||" not in script and ";" not in script
    for name in PLATFORM:
        condition = services[name]["depends_on"]["recordings-bucket"]["condition"]
        assert condition == "service_completed_successfully", name


def test_every_dependency_and_volume_named_exists(services: dict) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith((".", "/")) or source in compose["volumes"], (name, volume)

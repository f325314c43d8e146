"""CALLBACK_ALLOWED_HOSTS: which URLs a call may name, and where a name may lead at delivery."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from calls.destinations import Destinations, GuardedResolver, RefusedDestination
from core.errors import BadRequest

DEFAULT = Destinations(["localhost", "127.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "https://localhost/status?x=1",
        "http://LOCALHOST./a",
        "http://[::1]:9000/",
        "http://user:pass@127.0.0.2/callbacks",
    ],
)
def test_loopback_urls_are_allowed_by_default(url: str) -> None:
    assert DEFAULT.check_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.5/hook", "status_callback host 10.0.0.5 is not allowed"),
        ("http://169.254.169.254/latest", "status_callback host 169.254.169.254 is not allowed"),
        ("https://example.com/hook", "status_callback host example.com is not allowed"),
        ("http://[::ffff:10.0.0.5]/", "status_callback host ::ffff:a00:5 is not allowed"),
        ("ftp://127.0.0.1/x", "status_callback must be an absolute http or https URL"),
        ("/relative/path", "status_callback must be an absolute http or https URL"),
        ("http://", "status_callback must be an absolute http or https URL"),
    ],
)
def test_other_urls_are_refused_saying_why(url: str, message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        DEFAULT.check_url(url)

    assert refused.value.message.startswith(message)


def test_names_under_a_listed_domain_and_a_star_are_allowed() -> None:
    destinations = Destinations(["*.hooks.test", "10.1.0.0/16"])

    assert destinations.check_url("https://a.b.hooks.test/x")
    assert destinations.check_url("http://10.1.200.3/x")
    with pytest.raises(BadRequest):
        destinations.check_url("https://hooks.test.evil.com/x")
    assert Destinations(["*"]).check_url("https://anything.example/x")


def test_a_name_may_lead_to_a_listed_network_or_a_public_address_only() -> None:
    def allowed(address: str) -> bool:
        return DEFAULT.allows_resolved(ipaddress.ip_address(address))

    assert allowed("127.0.0.1") and allowed("::1")
    assert allowed("93.184.216.34")
    assert not allowed("10.0.0.5")
    assert not allowed("192.168.1.1")
    assert not allowed("169.254.169.254")
    assert not allowed("::ffff:10.0.0.5")


def test_an_address_no_longer_allowed_is_refused_at_delivery() -> None:
    with pytest.raises(RefusedDestination):
        Destinations(["localhost"]).check_host("127.0.0.1")
    DEFAULT.check_host("127.0.0.1")


class FakeResolver:
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict]:
        return [
            {"hostname": host, "host": address, "port": port, "family": family, "proto": 0,
             "flags": 0}
            for address in self.addresses
        ]  # fmt: skip


async def test_the_resolver_keeps_only_the_allowed_addresses() -> None:
    resolver = GuardedResolver(DEFAULT)
    resolver._resolver = FakeResolver(["10.0.0.5", "127.0.0.1"])  # type: ignore[assignment]

    found = await resolver.resolve("localhost", 80, socket.AF_INET)

    assert [result["host"] for result in found] == ["127.0.0.1"]


async def test_a_name_rebound_into_a_private_network_is_refused() -> None:
    resolver = GuardedResolver(Destinations(["*.hooks.test"]))
    resolver._resolver = FakeResolver(["10.0.0.5", "192.168.0.9"])  # type: ignore[assignment]

    with pytest.raises(RefusedDestination, match=r"\(10\.0\.0\.5, 192\.168\.0\.9\)"):
        await resolver.resolve("a.hooks.test", 80, socket.AF_INET)

"""Where status callbacks may go: the hosts of CALLBACK_ALLOWED_HOSTS, checked when a call is
created and again on the address the host resolves to when each callback is sent, so DNS cannot
turn a callback toward a network the operator did not open (DNS rebinding).

An entry is an IP network (`127.0.0.0/8`, `::1`, `10.1.2.3`), a host name (`localhost`), every
name under a domain (`*.example.com`), or `*` (any name). A URL naming an address must name one
inside a listed network. A URL naming a host must name a listed one, and its callbacks go only
to the addresses it resolves to that are inside a listed network or public (globally routable):
never, by way of a name, to a private, loopback or link-local address no entry opens.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from core.errors import BadRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The longest status_callback accepted (the length browsers and most servers handle).
MAX_URL_LENGTH = 2048


class RefusedDestination(OSError):
    """A callback's host or address is not allowed (any more): the attempt fails, and is
    retried like any connection error."""


class Destinations:
    def __init__(self, allowed: Sequence[str]) -> None:
        self._networks: list[Network] = []
        self._names: list[str] = []
        for entry in (e.strip().lower() for e in allowed):
            if not entry:
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self._names.append(entry.rstrip("."))

    def check_url(self, url: str) -> str:
        """A status_callback as given, if it is an absolute http(s) URL to an allowed host;
        else BadRequest saying why."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise BadRequest("status_callback must be an http or https URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BadRequest("status_callback must be an absolute http or https URL")
        host = parsed.host.lower()
        address = _address(host)
        allowed = self._in_networks(address) if address is not None else self._named(host)
        if not allowed:
            raise BadRequest(
                f"status_callback host {host} is not allowed: the platform calls back only"
                " hosts in CALLBACK_ALLOWED_HOSTS"
            )
        return url

    def check_host(self, host: str) -> None:
        """Raise RefusedDestination unless callbacks may go to `host` (a name or an address)
        now, as the settings stand."""
        address = _address(host.lower())
        if address is None and not self._named(host.lower()):
            raise RefusedDestination(f"host {host} is not in CALLBACK_ALLOWED_HOSTS")
        if address is not None and not self._in_networks(address):
            raise RefusedDestination(f"address {host} is not in CALLBACK_ALLOWED_HOSTS")

    def allows_resolved(self, address: Address) -> bool:
        """Whether a callback may go to `address`, which an allowed name resolved to."""
        return self._in_networks(address) or _plain(address).is_global

    def _in_networks(self, address: Address) -> bool:
        plain = _plain(address)
        return any(plain in network for network in self._networks)

    def _named(self, host: str) -> bool:
        host = host.rstrip(".")
        return any(
            name == "*" or name == host or (name.startswith("*.") and host.endswith(name[1:]))
            for name in self._names
        )


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _plain(address: Address) -> Address:
    """An IPv4 address written as IPv6 (::ffff:10.0.0.1) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class GuardedResolver(AbstractResolver):
    """The system resolver, less the addresses `destinations` do not allow a name to reach: the
    connection goes to an address checked here, so no second lookup can change it."""

    def __init__(self, destinations: Destinations) -> None:
        self._destinations = destinations
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        allowed = [
            result
            for result in found
            if (address := _address(result["host"])) is not None
            and self._destinations.allows_resolved(address)
        ]
        if not allowed:
            refused = ", ".join(sorted({result["host"] for result in found}))
            raise RefusedDestination(
                f"{host} resolves only to addresses not in CALLBACK_ALLOWED_HOSTS ({refused})"
            )
        return allowed

    async def close(self) -> None:
        await self._resolver.close()

"""Signing a callback, and the receiver's check: constant-time, five minutes' tolerance."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from calls.signing import SignatureError, sign, signature_header, verify

SECRET = "whsec_" + "ab" * 32
BODY = b'{"call_id":"c1","seq":2,"status":"RINGING"}'
NOW = 1_795_000_000


def test_the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_raw_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()

    assert sign(SECRET, BODY, NOW) == expected
    assert signature_header(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"


def test_a_signed_body_verifies_and_gives_its_timestamp() -> None:
    header = signature_header(SECRET, BODY, NOW)

    assert verify(SECRET, BODY, header, now=NOW + 299) == NOW


def test_a_tampered_body_fails() -> None:
    header = signature_header(SECRET, BODY, NOW)

    with pytest.raises(SignatureError, match="no signature matches"):
        verify(SECRET, BODY.replace(b"RINGING", b"ANSWERED"), header, now=NOW)


def test_another_secret_fails() -> None:
    header = signature_header("whsec_" + "cd" * 32, BODY, NOW)

    with pytest.raises(SignatureError):
        verify(SECRET, BODY, header, now=NOW)


@pytest.mark.parametrize("offset_s", [301, -301])
def test_a_timestamp_more_than_five_minutes_off_fails(offset_s: int) -> None:
    header = signature_header(SECRET, BODY, NOW)

    with pytest.raises(SignatureError, match="more than 300 s from now"):
        verify(SECRET, BODY, header, now=NOW + offset_s)


def test_a_stale_timestamp_cannot_be_refreshed_without_the_secret() -> None:
    stale = signature_header(SECRET, BODY, NOW - 3_600)
    fresh_t = stale.replace(f"t={NOW - 3_600}", f"t={NOW}")

    with pytest.raises(SignatureError, match="no signature matches"):
        verify(SECRET, BODY, fresh_t, now=NOW)


def test_any_one_of_several_signatures_may_match() -> None:
    header = f"t={NOW},v1={'0' * 64},v1={sign(SECRET, BODY, NOW)}"

    assert verify(SECRET, BODY, header, now=NOW) == NOW


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", f"v1={'0' * 64}", f"t={NOW}", "garbage"])
def test_a_malformed_header_fails(header: str) -> None:
    with pytest.raises(SignatureError, match="must be t=<unix seconds>,v1=<hex signature>"):
        verify(SECRET, BODY, header, now=NOW)

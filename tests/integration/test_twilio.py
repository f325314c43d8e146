"""The Twilio face, driven by the official `twilio` Python SDK pointed at the platform: accounts
and Basic auth, calls created, fetched, listed, paged, filtered and hung up, Twilio's errors and
magic numbers, our scripted numbers ending in their Twilio status, and status callbacks the SDK's
own RequestValidator accepts, each one asked for and in order. The same calls through our routes."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from devstack.receiver import Received, Receiver
from tests.integration.conftest import Api
from tests.integration.platform import ROOT, Platform

# A call's life takes about two seconds: long enough for a client to step in between its timers.
SETTINGS = {"TIME_SCALE": "0.25"}
URL = "http://demo.twilio.com/docs/voice.xml"
VALID_FROM = "+15005550006"


@pytest.fixture(scope="module")
async def own(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    running = Platform(tmp_path_factory.mktemp("twilio"), settings=SETTINGS, workers=2)
    try:
        yield await running.start()
    finally:
        await running.stop()


class MockComms(TwilioHttpClient):
    """The SDK's own HTTP client, sending to the platform instead of api.twilio.com."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(
            method, url.replace("https://api.twilio.com", self.base_url), *args, **kwargs
        )


class Account:
    """A fresh key on the platform, as a Twilio account: its SID, Auth Token and SDK client."""

    def __init__(self, api: Api, sid: str) -> None:
        self.api, self.sid, self.token = api, sid, api.key
        self.client = Client(sid, api.key, http_client=MockComms(api.platform.base_url))

    async def run(self, work: Callable[[], Any]) -> Any:
        """Run blocking SDK work off the loop (the test's receiver lives on it)."""
        return await asyncio.to_thread(work)

    async def ours(self, call_sid: str) -> dict[str, Any]:
        """The call as our own route shows it (its id is the SID's 32 hex digits)."""
        status, body, _ = await self.api.get_call(str(uuid.UUID(hex=call_sid[2:])))
        assert status == 200, body
        return body


async def account_of(api: Api) -> Account:
    """Find the key's Account SID as a client would: GET /2010-04-01/Accounts.json with it."""
    status, body, _ = await api.request("GET", "/2010-04-01/Accounts.json")
    assert status == 200, body
    (found,) = body["accounts"]
    return Account(api, found["sid"])


@pytest.fixture
async def account(http: aiohttp.ClientSession, own: Platform) -> Account:
    return await account_of(Api(http, own, await own.new_key(max_concurrent=100, max_cps=100)))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = await Receiver().start()
    yield running
    await running.stop()


def basic(sid: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}


async def wait_status(account: Account, sid: str, wanted: str, timeout: float = 15) -> Any:
    call = None
    async with asyncio.timeout(timeout):
        while True:
            call = await account.run(lambda: account.client.calls(sid).fetch())
            if call.status == wanted:
                return call
            await asyncio.sleep(0.1)


# -- accounts and auth ---------------------------------------------------------------------------


async def test_the_sdk_finds_its_account_and_keys_list_shows_the_sid(account: Account) -> None:
    assert account.sid.startswith("AC") and len(account.sid) == 34
    fetched = await account.run(lambda: account.client.api.v2010.accounts(account.sid).fetch())
    assert (fetched.sid, fetched.status, fetched.auth_token) == (account.sid, "active", None)
    listed = await account.run(lambda: account.client.api.v2010.accounts.list())
    assert [a.sid for a in listed] == [account.sid]

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "db", "keys", "list"],
        cwd=ROOT,
        env=os.environ | {"DATABASE_URL": account.api.platform.dsn},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ACCOUNT SID" in done.stdout and account.sid in done.stdout


async def test_wrong_credentials_are_twilios_20003_and_a_bearer_key_works_too(
    account: Account, http: aiohttp.ClientSession, make_api: Callable[..., Any]
) -> None:
    other = await account_of(await make_api(on=account.api.platform))
    calls_url = account.api.url(f"/2010-04-01/Accounts/{account.sid}/Calls.json")
    for headers in (
        basic(account.sid, "not-the-token"),
        basic(other.sid, account.token),  # the token of another account's SID
        basic(other.sid, other.token),  # another account's path
        {},
    ):
        async with http.get(calls_url, headers=headers) as response:
            body = await response.json()
            assert response.status == 401, body
            assert body["code"] == 20003 and body["status"] == 401
            assert body["more_info"] == "https://www.twilio.com/docs/errors/20003"
            assert "Basic" in response.headers["WWW-Authenticate"]
    async with http.get(calls_url, headers=basic(account.sid, account.token)) as response:
        assert response.status == 200
    async with http.get(calls_url, headers={"Authorization": f"Bearer {account.token}"}) as answer:
        assert answer.status == 200

    client = Client(
        account.sid, "wrong-token", http_client=MockComms(account.api.platform.base_url)
    )
    with pytest.raises(TwilioRestException) as refused:
        await account.run(lambda: client.api.v2010.accounts(account.sid).fetch())
    assert (refused.value.status, refused.value.code) == (401, 20003)


async def test_the_readmes_python_lines_point_the_sdk_at_the_platform(account: Account) -> None:
    readme = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"^```python twilio\n(.*?)^```", readme, flags=re.M | re.S)
    scope = {"account_sid": account.sid, "auth_token": account.token}
    exec(block.replace("http://localhost:3000", account.api.platform.base_url), scope)
    client = scope["client"]
    created = await account.run(
        lambda: client.calls.create(to="+15555550101", from_=VALID_FROM, url=URL)
    )
    assert created.account_sid == account.sid
    assert (await account.run(lambda: client.calls(created.sid).fetch())).sid == created.sid


# -- calls -----------------------------------------------------------------------------------


async def test_the_sdk_creates_fetches_and_sees_a_call_end_as_our_routes_do(
    account: Account,
) -> None:
    created = await account.run(
        lambda: account.client.calls.create(to="+15555550100", from_=VALID_FROM, url=URL)
    )
    assert created.sid.startswith("CA") and created.account_sid == account.sid
    assert (created.status, created.direction, created.api_version) == (
        "queued",
        "outbound-api",
        "2010-04-01",
    )
    assert created.date_created.tzinfo is not None  # Twilio's RFC 2822 date, parsed by the SDK
    done = await wait_status(account, created.sid, "completed")
    assert done.end_time is not None and int(done.duration) >= 0
    ours = await account.ours(created.sid)
    assert (ours["status"], ours["end_reason"], ours["to"]) == (
        "COMPLETED",
        "completed",
        "+15555550100",
    )
    assert ours["twilio"]["url"] == URL


@pytest.mark.parametrize(
    ("to", "twilio_status", "end_reason"),
    [
        ("+15555550100", "completed", "completed"),
        ("+15555550101", "busy", "busy"),
        ("+15555550102", "no-answer", "no_answer"),
        ("+15555550103", "failed", "failed"),
    ],
)
async def test_each_scripted_to_number_ends_in_its_twilio_status(
    account: Account, to: str, twilio_status: str, end_reason: str
) -> None:
    created = await account.run(
        lambda: account.client.calls.create(to=to, from_=VALID_FROM, twiml="<Response/>")
    )
    await wait_status(account, created.sid, twilio_status)
    assert (await account.ours(created.sid))["end_reason"] == end_reason


async def test_hanging_up_cancels_an_unanswered_call_and_completes_an_answered_one(
    account: Account,
) -> None:
    api = account.api
    # Calls made through our own route, scripted to wait: the Twilio face moves the same calls.
    _, ringing, _ = await api.create_call(scenario={"outcome": "completed", "ring_ms": 600_000})
    ringing_sid = "CA" + uuid.UUID(ringing["call_id"]).hex
    canceled = await account.run(
        lambda: account.client.calls(ringing_sid).update(status="canceled")
    )
    assert canceled.status == "canceled"
    assert (await account.ours(ringing_sid))["end_reason"] == "canceled"

    _, talking, _ = await api.create_call(scenario={"outcome": "completed", "talk_ms": 600_000})
    talking_sid = "CA" + uuid.UUID(talking["call_id"]).hex
    status, _, _ = await api.request("POST", f"/calls/{talking['call_id']}/advance?to=ANSWERED")
    assert status == 200
    still = await account.run(lambda: account.client.calls(talking_sid).update(status="canceled"))
    assert still.status == "in-progress", "canceled does not end an answered call"
    ended = await account.run(lambda: account.client.calls(talking_sid).update(status="completed"))
    assert (ended.status, ended.end_time is not None) == ("completed", True)
    again = await account.run(lambda: account.client.calls(talking_sid).update(status="completed"))
    assert again.status == "completed", "an ended call is answered as it is"
    with pytest.raises(TwilioRestException) as refused:
        await account.run(lambda: account.client.calls(talking_sid).update(url=URL))
    assert refused.value.code == 21220


async def test_the_sdk_lists_pages_and_filters_calls(account: Account) -> None:
    sids = []
    for to in ("+15555550101", "+15555550101", "+15555550101", "+15555550103", "+14155550199"):
        created = await account.run(
            lambda to=to: account.client.calls.create(to=to, from_=VALID_FROM, url=URL)
        )
        sids.append(created.sid)
    listed = await account.run(lambda: account.client.calls.list(page_size=2))
    assert [c.sid for c in listed] == sids[::-1], "every page followed, newest first"

    first = await account.run(lambda: account.client.calls.page(page_size=2))
    first_sids = [c.sid for c in first]  # a page is read once
    assert first_sids == sids[4:2:-1]
    second = await account.run(first.next_page)
    assert [c.sid for c in second] == sids[2:0:-1]
    third = await account.run(second.next_page)
    assert [c.sid for c in third] == sids[:1]
    assert await account.run(third.next_page) is None
    back = await account.run(second.previous_page)
    assert [c.sid for c in back] == first_sids

    to_busy = await account.run(lambda: account.client.calls.list(to="+15555550101"))
    assert [c.sid for c in to_busy] == sids[2::-1]
    for sid in sids[:4]:
        await wait_status(account, sid, "busy" if sid in sids[:3] else "failed")
    busy = await account.run(lambda: account.client.calls.list(status="busy"))
    assert [c.sid for c in busy] == sids[2::-1]
    now = datetime.now(UTC)
    recent = await account.run(
        lambda: account.client.calls.list(start_time_after=now - timedelta(minutes=5))
    )
    assert len(recent) == 5
    old = await account.run(
        lambda: account.client.calls.list(start_time_before=now - timedelta(days=2))
    )
    assert old == []
    with pytest.raises(TwilioException, match="20001"):
        await account.run(lambda: account.client.calls.list(end_time_after=now))


# -- errors and magic numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "from_", "url", "code"),
    [
        ("+15005550001", VALID_FROM, URL, 21217),
        ("+15005550002", VALID_FROM, URL, 21214),
        ("+15005550003", VALID_FROM, URL, 21215),
        ("+15005550004", VALID_FROM, URL, 21216),
        ("+14155550199", "+15005550001", URL, 21212),
        ("12345", VALID_FROM, URL, 21211),
        ("+14155550199", "not a number", URL, 21212),
        ("+14155550199", VALID_FROM, None, 21205),
    ],
)
async def test_magic_and_bad_numbers_are_refused_with_twilios_codes_taking_no_call(
    account: Account, to: str, from_: str, url: str | None, code: int
) -> None:
    options = {"url": url} if url else {}
    with pytest.raises(TwilioRestException) as refused:
        await account.run(lambda: account.client.calls.create(to=to, from_=from_, **options))
    assert (refused.value.status, refused.value.code) == (400, code)
    assert await account.run(lambda: account.client.calls.list()) == []


async def test_an_unknown_call_is_20404_and_so_is_an_unknown_path(
    account: Account, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(TwilioRestException) as refused:
        await account.run(lambda: account.client.calls("CA" + "0" * 32).fetch())
    assert (refused.value.status, refused.value.code) == (404, 20404)
    url = account.api.url(f"/2010-04-01/Accounts/{account.sid}/Messages.json")
    async with http.get(url, headers=basic(account.sid, account.token)) as response:
        assert (response.status, (await response.json())["code"]) == (404, 20404)


async def test_the_limiter_answers_twilios_20429_with_retry_after(
    http: aiohttp.ClientSession, own: Platform
) -> None:
    account = await account_of(Api(http, own, await own.new_key(max_concurrent=10, max_cps=1)))
    url = account.api.url(f"/2010-04-01/Accounts/{account.sid}/Calls.json")
    form = {"To": "+14155550199", "From": VALID_FROM, "Url": URL}

    async def create() -> tuple[int, dict, Any]:
        async with http.post(url, data=form, headers=basic(account.sid, account.token)) as answer:
            return answer.status, await answer.json(), answer.headers

    answers = await asyncio.gather(create(), create())
    assert sorted(status for status, _, _ in answers) == [201, 429]
    _, body, headers = next(a for a in answers if a[0] == 429)
    assert body["code"] == 20429 and "per second" in body["message"]
    assert int(headers["Retry-After"]) >= 1


# -- status callbacks ------------------------------------------------------------------------


def validated(account: Account, requests: list[Received]) -> list[dict[str, str]]:
    """Each callback's form, once the SDK's RequestValidator has accepted its signature."""
    validator = RequestValidator(account.token)
    forms = []
    for request in requests:
        form = request.form()
        params = {} if request.method == "GET" else form
        signature = request.headers["X-Twilio-Signature"]
        assert validator.validate(request.url, params, signature), request
        forms.append(form)
    return forms


async def test_status_callbacks_are_twilios_forms_only_those_asked_in_order_and_validated(
    account: Account, receiver: Receiver
) -> None:
    created = await account.run(
        lambda: account.client.calls.create(
            to="+15555550100",
            from_=VALID_FROM,
            url=URL,
            status_callback=receiver.url("/all?tenant=7"),
            status_callback_event=["initiated", "ringing", "answered", "completed"],
        )
    )
    await receiver.wait_for(lambda got: len([r for r in got if r.path == "/all"]) == 4)
    got = receiver.to("/all")
    forms = validated(account, got)
    assert [f["CallStatus"] for f in forms] == ["initiated", "ringing", "in-progress", "completed"]
    assert [f["SequenceNumber"] for f in forms] == ["0", "1", "2", "3"]
    for form in forms:
        assert (form["CallSid"], form["AccountSid"]) == (created.sid, account.sid)
        assert (form["To"], form["From"], form["Direction"]) == (
            "+15555550100",
            VALID_FROM,
            "outbound-api",
        )
        assert (form["ApiVersion"], form["CallbackSource"]) == (
            "2010-04-01",
            "call-progress-events",
        )
        assert form["Timestamp"].endswith("+0000")
    assert [("CallDuration" in f) for f in forms] == [False, False, False, True]
    assert all(
        r.headers["Content-Type"].startswith("application/x-www-form-urlencoded") for r in got
    )
    assert len({r.headers["I-Twilio-Idempotency-Token"] for r in got}) == 4

    # A tampered callback fails the same check.
    tampered = forms[3] | {"CallStatus": "busy"}
    assert not RequestValidator(account.token).validate(
        got[3].url, tampered, got[3].headers["X-Twilio-Signature"]
    )
    # The delivery log of our routes has them, as for any callback (each marked delivered just
    # after its answer came).
    log_path = f"/calls/{uuid.UUID(hex=created.sid[2:])}/callbacks"
    async with asyncio.timeout(10):
        while True:
            status, log, _ = await account.api.request("GET", log_path)
            assert status == 200, log
            if [d["state"] for d in log["data"]] == ["delivered"] * 4:
                break
            await asyncio.sleep(0.05)


async def test_a_get_status_callback_without_events_sends_completed_alone(
    account: Account, receiver: Receiver
) -> None:
    await account.run(
        lambda: account.client.calls.create(
            to="+15555550101",
            from_=VALID_FROM,
            url=URL,
            status_callback=receiver.url("/get"),
            status_callback_method="GET",
        )
    )
    await receiver.wait_for(lambda got: any(r.path == "/get" for r in got))
    await asyncio.sleep(0.5)  # nothing else comes
    got = receiver.to("/get")
    assert [r.method for r in got] == ["GET"]
    (form,) = validated(account, got)
    assert (form["CallStatus"], form["CallDuration"], form["SequenceNumber"]) == ("busy", "0", "0")


async def test_a_call_resumed_from_hold_is_answered_once(
    account: Account, receiver: Receiver
) -> None:
    created = await account.run(
        lambda: account.client.calls.create(
            to="+15555550100",
            from_=VALID_FROM,
            url=URL,
            status_callback=receiver.url("/hold"),
            status_callback_event=["answered", "completed"],
        )
    )
    call_id = str(uuid.UUID(hex=created.sid[2:]))
    api = account.api
    assert (await api.request("POST", f"/calls/{call_id}/advance?to=ANSWERED"))[0] == 200
    for event in ("call_hold", "call_resumed"):
        status, body, _ = await api.request(
            "POST", "/events", json={"event": event, "call_id": call_id}
        )
        assert status == 201, body
    await account.run(lambda: account.client.calls(created.sid).update(status="completed"))
    await receiver.wait_for(lambda got: any(r.form().get("CallStatus") == "completed" for r in got))
    forms = validated(account, receiver.to("/hold"))
    assert [f["CallStatus"] for f in forms] == ["in-progress", "completed"]


async def test_the_auth_token_is_kept_only_for_a_key_whose_twilio_calls_call_back(
    http: aiohttp.ClientSession, own: Platform, receiver: Receiver
) -> None:
    quiet = await account_of(Api(http, own, await own.new_key(max_concurrent=10, max_cps=10)))
    calling_back = await account_of(
        Api(http, own, await own.new_key(max_concurrent=10, max_cps=10))
    )
    await quiet.run(lambda: quiet.client.calls.create(to="+15555550101", from_=VALID_FROM, url=URL))
    await calling_back.run(
        lambda: calling_back.client.calls.create(
            to="+15555550101", from_=VALID_FROM, url=URL, status_callback=receiver.url("/kept")
        )
    )
    conn = await asyncpg.connect(own.dsn)
    try:
        kept = {
            row["name"]: row["auth_token"]
            for row in await conn.fetch(
                "SELECT name, auth_token FROM api_keys WHERE name = ANY($1::text[])",
                [quiet.token, calling_back.token],
            )
        }
    finally:
        await conn.close()
    assert kept == {quiet.token: None, calling_back.token: calling_back.token}

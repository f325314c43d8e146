"""The benchmark's HTTP/1.1 response parser: answers split anywhere, by length or by chunks."""

from __future__ import annotations

from typing import Any

from bench.http import ResponseParser


def parsed(*pieces: bytes) -> list[Any]:
    got: list[Any] = []
    parser = ResponseParser(
        lambda status, headers: got.append(status),
        lambda body: got.append(body),
        lambda: got.append("end"),
    )
    for piece in pieces:
        parser.feed(piece)
    return got


def test_a_body_by_length_may_arrive_in_pieces() -> None:
    assert parsed(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhel", b"lo") == [
        201,
        b"hel",
        b"lo",
        "end",
    ]


def test_chunks_then_the_next_answer_on_the_same_connection() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"

    assert parsed(chunked[:40], chunked[40:] + empty) == [200, b"abc", b"de", "end", 204, "end"]

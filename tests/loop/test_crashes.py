"""A bug meets a frame: the stream survives. A venue module that raises on a frame turns that
frame into a dead letter (`internal_error`, the exact bytes) and the session goes on; any other
unexpected exception ends the session (reconnect reason `internal_error`, logged with its
traceback) and the stream reconnects, never taking the process and its other streams down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import structlog

from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.credentials import AQUANOW_KEY, AQUANOW_SECRET
from bridge.records import DeadLetter, Envelope
from bridge.venues.base import Frame, ParseResult
from tests.loop.conftest import eventually, running, stream_settings

pytestmark = pytest.mark.loop

MARKER = '{"type":"balance","payload":{"symbol":"BUG"}}'


@pytest.fixture
async def sim() -> AsyncIterator[AquanowSimulator]:
    async with AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=50, seed=3) as simulator:
        yield simulator  # type: ignore[misc]


def aquanow(url: str) -> object:
    return stream_settings(
        venue="aquanow", url=url, api_key=AQUANOW_KEY, api_secret=AQUANOW_SECRET, ack_grace=0.2
    )


async def test_a_parser_crash_is_a_dead_letter_and_the_session_goes_on(
    sim: AquanowSimulator,
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(aquanow(sim.url)) as run:  # type: ignore[arg-type]
            parse = run.connection.venue.parse

            def buggy(frame: Frame) -> ParseResult:
                if frame.data == MARKER:
                    raise KeyError("a bug")
                return parse(frame)

            run.connection.venue.parse = buggy  # type: ignore[method-assign]
            await eventually(lambda: run.state.subscribed, "subscribed")
            await sim.send_raw(MARKER)
            await eventually(lambda: bool(run.sink.dead_letters()), "the dead letter")
            count = len(run.sink.records)
            await eventually(lambda: len(run.sink.records) > count + 3, "records after it")
    (dead,) = run.sink.dead_letters()
    assert isinstance(dead, DeadLetter)
    assert (dead.reason, dead.raw) == ("internal_error", MARKER.encode())
    assert "KeyError: 'a bug'" in dead.detail
    assert run.metric("bridge_ws_sessions_total") == 1, "no reconnect"
    (crash,) = [e for e in logs if e["event"] == "parser crashed on a frame"]
    assert crash["log_level"] == "error"
    assert isinstance(crash["exc_info"], KeyError), "logged with the traceback"


async def test_an_unexpected_exception_ends_the_session_not_the_stream(
    sim: AquanowSimulator,
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with running(aquanow(sim.url)) as run:  # type: ignore[arg-type]
            publish = run.sink.publish
            failures = iter([RuntimeError("boom")])

            async def flaky(record: Envelope, received_mono: float | None = None) -> None:
                if len(run.sink.records) == 10:
                    error = next(failures, None)
                    if error is not None:
                        raise error
                await publish(record, received_mono)

            run.sink.publish = flaky  # type: ignore[method-assign]
            await eventually(lambda: run.reconnects("internal_error") == 1, "the crash counted")
            await eventually(lambda: run.metric("bridge_ws_sessions_total") == 2, "resubscribed")
            await eventually(lambda: len(run.sink.records) > 20, "records after the crash")
    lost = [e for e in logs if e["event"] == "connection lost"]
    assert [(e["reason"], e["detail"]) for e in lost] == [("internal_error", "RuntimeError: boom")]
    (crash,) = [e for e in logs if e["event"] == "stream session crashed"]
    assert isinstance(crash["exc_info"], RuntimeError)

"""The registry client's HTTP contract, against a scripted loopback server: what it sends
(basic auth, content type, the schema as a JSON string) and how it classifies answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from bridge.errors import IncompatibleSchema, RegistryError
from bridge.registry import CONTENT_TYPE, RegistryClient

pytestmark = pytest.mark.loop

Handler = Callable[[web.Request], Any]


@pytest.fixture
async def server() -> AsyncIterator[tuple[list[tuple[web.Request, str]], list[Any], str]]:
    """A server answering each request with the next scripted (status, body)."""
    seen: list[tuple[web.Request, str]] = []
    script: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request, await request.text()))
        status, body = script.pop(0)
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield seen, script, f"http://127.0.0.1:{port}/base/"
    await runner.cleanup()


async def test_register_sends_the_schema_text_with_basic_auth(server: Any) -> None:
    seen, script, url = server
    script.append((200, {"id": 7}))
    async with RegistryClient(url, username="key", password="s3cret") as client:
        assert await client.register("my.topic-value", '{"type":"string"}') == 7
    request, body = seen[0]
    assert (request.method, request.path) == ("POST", "/base/subjects/my.topic-value/versions")
    assert request.headers["Content-Type"] == CONTENT_TYPE
    assert request.headers["Authorization"] == "Basic a2V5OnMzY3JldA=="  # key:s3cret
    assert json.loads(body) == {"schema": '{"type":"string"}'}


async def test_subject_names_are_escaped(server: Any) -> None:
    seen, script, url = server
    script.append((200, {"compatibility": "FULL"}))
    async with RegistryClient(url) as client:
        await client.set_compatibility("a/b c-value", "FULL")
    request, _ = seen[0]
    assert request.raw_path == "/base/config/a%2Fb%20c-value"
    assert "Authorization" not in request.headers


@pytest.mark.parametrize(
    ("status", "body", "retriable"),
    [
        (500, {"error_code": 50001, "message": "storage down"}, True),
        (503, "<html>busy</html>", True),
        (429, {"message": "slow down"}, True),
        (401, {"error_code": 401, "message": "Unauthorized"}, False),
        (422, {"error_code": 42201, "message": "Invalid schema"}, False),
    ],
)
async def test_answers_are_classified(server: Any, status: int, body: Any, retriable: bool) -> None:
    _, script, url = server
    script.append((status, body))
    async with RegistryClient(url) as client:
        with pytest.raises(RegistryError) as error:
            await client.register("t-value", "{}")
    assert error.value.retriable is retriable
    assert error.value.status == status
    assert f"HTTP {status}" in str(error.value)
    assert not isinstance(error.value, IncompatibleSchema)


async def test_409_is_an_incompatible_schema_with_the_registrys_message(server: Any) -> None:
    _, script, url = server
    script.append((409, {"error_code": 409, "message": "Schema being registered is incompatible"}))
    async with RegistryClient(url) as client:
        with pytest.raises(IncompatibleSchema) as error:
            await client.register("balances-value", "{}")
    assert str(error.value) == (
        "subject balances-value: the registry refused the schema as incompatible: "
        "Schema being registered is incompatible"
    )


async def test_a_200_that_is_not_json_is_an_error(server: Any) -> None:
    _, script, url = server
    script.append((200, "<html>login page</html>"))
    async with RegistryClient(url) as client:
        with pytest.raises(RegistryError, match="answer is not JSON"):
            await client.schema_by_id(1)

"""The venue simulators, served on loopback, against the venues' documented requests and
signing vectors (tests/data): they must accept exactly what the docs say a venue accepts and
refuse the rest. Nothing here uses the bridge's signing code, so a signing bug in the bridge
cannot hide behind a simulator that shares it; no broker is involved."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import websockets

from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from tests.data import aquanow, satori

pytestmark = pytest.mark.loop

AQ_KEY = "doc-key"
NONCE_MS = 1_700_000_000_000  # the nonce of every Aquanow vector


def aquanow_request(index: int, key: str = AQ_KEY, signature: str | None = None) -> str:
    """Vector `index`'s signed text plus apiKey and apiSignature, as the docs send it (§1.2)."""
    text, signed = aquanow.VECTORS[index]
    extra = {"apiKey": key, "apiSignature": signed if signature is None else signature}
    return text[:-1] + "," + json.dumps(extra, separators=(",", ":"))[1:]


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
async def aquanow_sim() -> AsyncIterator[tuple[AquanowSimulator, Clock]]:
    clock = Clock(NONCE_MS)
    sim = AquanowSimulator(AQ_KEY, aquanow.SECRET, rate=50, clock=clock)
    async with sim:
        yield sim, clock


async def refused(url: str, message: str) -> str:
    """Send `message` on a fresh connection: the error frame's message, after checking that
    the venue then closes with 1008."""
    async with websockets.connect(url) as ws:
        await ws.send(message)
        reply = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert reply["type"] == "error"
    return str(reply["message"])


async def test_aquanow_accepts_the_documented_subscribe_and_pushes(
    aquanow_sim: tuple[AquanowSimulator, Clock],
) -> None:
    sim, _ = aquanow_sim
    async with websockets.connect(sim.url) as ws:
        await ws.send(aquanow_request(2))  # balanceReport
        push = json.loads(await ws.recv())
    assert push["type"] in ("balance", "tradeCreditBalance")
    assert sim.subscriptions_accepted == 1
    assert sim.auth_failures == 0


async def test_aquanow_refuses_what_the_vectors_do_not_sign(
    aquanow_sim: tuple[AquanowSimulator, Clock],
) -> None:
    sim, clock = aquanow_sim
    other_channel = aquanow.VECTORS[1][1]  # parentOrderReport's signature
    flipped = aquanow.VECTORS[0][1][:-1] + ("0" if aquanow.VECTORS[0][1][-1] != "0" else "1")
    cases = [
        (aquanow_request(0, signature=other_channel), "Unauthorized: invalid signature"),
        (aquanow_request(0, signature=flipped), "Unauthorized: invalid signature"),
        (aquanow_request(0, key="other-key"), "Unauthorized: unknown apiKey"),
    ]
    for message, problem in cases:
        assert await refused(sim.url, message) == problem
    async with websockets.connect(sim.url) as ws:
        await ws.send(aquanow_request(0))
    assert await refused(sim.url, aquanow_request(0)) == "Unauthorized: nonce already used"
    clock.ms += 60_000
    assert await refused(sim.url, aquanow_request(1)) == "Unauthorized: nonce outdated"
    assert sim.auth_failures == 5
    assert sim.subscriptions_accepted == 1


async def test_aquanow_rest_checks_the_documented_path_signature(
    aquanow_sim: tuple[AquanowSimulator, Clock],
) -> None:
    sim, _ = aquanow_sim
    path = "/users/v1/userbalance"
    headers = {"x-api-key": AQ_KEY, "x-nonce": str(NONCE_MS)}
    async with aiohttp.ClientSession(sim.rest_url) as session:
        # the /trades/v2/order vector's signature does not sign this path
        wrong = {**headers, "x-signature": aquanow.VECTORS[4][1]}
        async with session.get(path, params={"accountId": sim.account_id}, headers=wrong) as r:
            assert (r.status, await r.json()) == (
                401,
                {"message": "Unauthorized: invalid signature"},
            )
        # query parameters are sent, not signed (§1.2)
        good = {**headers, "x-signature": aquanow.VECTORS[3][1]}
        async with session.get(path, params={"accountId": sim.account_id}, headers=good) as r:
            assert (r.status, await r.json()) == (200, [])


@pytest.fixture
async def satori_sim() -> AsyncIterator[tuple[SatoriSimulator, Clock]]:
    clock = Clock(1_725_870_284_179)  # vector 1's timestamp
    sim = SatoriSimulator(satori.API_KEY, satori.WALLET, rate=20, clock=clock)
    async with sim:
        yield sim, clock


async def test_satori_answers_the_docs_worked_request_with_the_documented_ack(
    satori_sim: tuple[SatoriSimulator, Clock],
) -> None:
    sim, _ = satori_sim
    async with websockets.connect(sim.url) as ws:
        await ws.send(satori.DOC_SUBSCRIBE_ACCOUNT)
        assert await ws.recv() == satori.DOC_ACKS[0][0]
        push = json.loads(await ws.recv())
    assert (push["event"], push["symbol"], push["success"]) == ("api_account", "USD", True)
    assert sim.subscriptions_accepted == 1


async def test_satori_checks_the_second_vector_on_its_own_timestamp(
    satori_sim: tuple[SatoriSimulator, Clock],
) -> None:
    sim, clock = satori_sim
    timestamp, signature = satori.VECTORS[1]  # §2.2 vector 2: WS api_entrust
    request = {
        "pair": "ETH-USD",
        "method": "SUBSCRIBE",
        "event": "api_entrust",
        "apiKey": satori.API_KEY,
        "signature": signature,
        "timestamp": int(timestamp),
        "signType": "2",
    }
    async with websockets.connect(sim.url) as ws:
        await ws.send(json.dumps(request))
        refusal = json.loads(await ws.recv())
        assert (refusal["success"], refusal["msg"]) == (False, "timestamp expired")
        clock.ms = int(timestamp)
        await ws.send(json.dumps(request))
        assert json.loads(await ws.recv()) == json.loads(satori.DOC_ACKS[1][0])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"signature": satori.VECTORS[1][1]}, "signature verification failed"),
        ({"signature": satori.VECTORS[0][1][2:]}, "signature verification failed"),
        ({"timestamp": 1_725_870_284_180}, "signature verification failed"),
        ({"apiKey": "st_other"}, "invalid apiKey"),
        ({"signType": "1"}, "signType must be 2"),
        ({"event": "api_trade", "pair": "ETH-USD", "period": "2MIN"}, "period is required"),
    ],
)
async def test_satori_refuses_what_the_docs_do_not_allow(
    satori_sim: tuple[SatoriSimulator, Clock], change: dict[str, object], problem: str
) -> None:
    sim, _ = satori_sim
    request = {**json.loads(satori.DOC_SUBSCRIBE_ACCOUNT), **change}
    async with websockets.connect(sim.url) as ws:
        await ws.send(json.dumps(request))
        reply = json.loads(await ws.recv())
    assert (reply["success"], reply["msg"]) == (False, problem)
    assert reply["event"] == f"{request['event']}_res"
    assert (sim.auth_failures, sim.subscriptions_accepted) == (1, 0)


async def test_satori_rest_recovers_the_signer_of_the_exact_query_string(
    satori_sim: tuple[SatoriSimulator, Clock],
) -> None:
    sim, clock = satori_sim
    query, signature = satori.VECTORS[3]  # §2.2 vector 6: REST balance
    clock.ms = int(query.rsplit("=", 1)[1])
    headers = {"APIKEY": satori.API_KEY, "X-SAPI-SIGN-TYPE": "2"}
    url = f"{sim.rest_url}/api/third/hot/order/balance?{query}"
    async with aiohttp.ClientSession() as session:
        other = {**headers, "signature": satori.VECTORS[2][1]}  # vector 5 signs another query
        async with session.post(url, headers=other) as r:
            body = await r.json()
            assert (r.status, body["msg"]) == (401, "signature verification failed")
        async with session.post(url, headers={**headers, "signature": signature}) as r:
            body = await r.json()
    assert (r.status, body["code"], body["data"]["symbol"]) == (200, 200, "USD")
    assert sim.rest_rejected == 1

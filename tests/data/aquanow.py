"""Aquanow golden data, verbatim from the docs (docs/venues.md part 1): signing vectors and the
Reporting Websocket page's own frames.

Never fabricated, never "fixed": a published example that is not valid JSON stays as published
(and a repaired copy sits next to it).
"""

from __future__ import annotations

SECRET = "test-secret-not-real"

# venues.md §1.2: Aquanow publishes no vectors; these were produced with Node and Python alike.
VECTORS = [
    (
        '{"type":"subscribe","channel":"executionReport","nonce":"1700000000000"}',
        "444e66d8c99400e8163d6609b1dc3fdcf4e46b9b3df95f979bfd8d51f06293c36af96ce1cf640cab1e69ea3410240917",
    ),
    (
        '{"type":"subscribe","channel":"parentOrderReport","nonce":"1700000000000"}',
        "cfd855375b5e8e9c836d5b7d3a35adf027cf3e19f7aa59128ff42241f9a054db0c72b74dfb7beaf6254ce8f62210ff61",
    ),
    (
        '{"type":"subscribe","channel":"balanceReport","nonce":"1700000000000"}',
        "c62fc5960adb69a8a059e8749ac7db6e086605cc070898763fe9ad71c31afc6b61336ed60087ecc5356d48d1afe72289",
    ),
    (
        '{"httpMethod":"GET","path":"/users/v1/userbalance","nonce":"1700000000000"}',
        "853d4e62d5820a70a810f148866f2eff2490acd5ba11edb5ac9ae6ff53a60df42d709d8a2ee3c92c3e0634025a3b2c24",
    ),
    (
        '{"httpMethod":"GET","path":"/trades/v2/order","nonce":"1700000000000"}',
        "0177556456a119e70e55e1b3c82e3d68be883120f3d09ac82762a06fa2ee889b7c3256c2c4bcd4afdb94fee4c9bb4888",
    ),
]

# The Reporting Websocket page's own examples (docs/venues.md §1.4 describes them).
DOC_BALANCE = """{
  "type": "balance",
  "payload": {
    "createdAt": 1554400262916,
    "accountId": "CA1000051R",
    "symbol": "BTC",
    "totalBalance": 2.30044886,
    "depositAddress": "-",
    "usernameSymbol": "helloWorld_BTC",
    "pendingTransfer": 0,
    "itemDateTime": 1557267645512,
    "availableBalance": 2.24044886,
    "updatedAt": 1554400262916,
    "username": "helloWorld"
  }
}"""
DOC_ORDER_WITHOUT_ORDER_ID = """{
  "type": "order",
  "payload": {
    "createdAt": 1557267645477,
    "accountId": "CA1000051R",
    "symbol": "BTC-USD",
    "totalBalance": 2.40047884,
    "depositAddress": "-",
    "usernameSymbol": "helloWorld_BTC",
    "pendingTransfer": 0,
    "itemDateTime": 1557267645646,
    "availableBalance": 2.24044886,
    "updatedAt": 1557267645477,
    "username": "helloWorld"
  }
}"""
# Published without two commas: not JSON. Kept verbatim, then repaired for the happy path.
DOC_CREDIT_AS_PUBLISHED = """{
  "type": "tradeCreditBalance",
  "payload": {
    "accountId": "CA1000051R",
    "adjustedMtmUSD": 49215.15490545314
    "createdAt": 1701366866377,
    "ltv": 167.79987870494583,
    "unutilizedCreditUSD": 950489.7899944618
    "updatedAt": 1712857675713,
    "username": "helloWorld"
  }
}"""
DOC_CREDIT_REPAIRED = DOC_CREDIT_AS_PUBLISHED.replace(
    "49215.15490545314\n", "49215.15490545314,\n"
).replace("950489.7899944618\n", "950489.7899944618,\n")
# venues.md §1.4.2 legacy GET-orders example (published truncated after orderIdParent).
DOC_LEGACY_ORDER = (
    '{"type":"order","payload":{"priceArrival":0.35126,"orderId":"460b8bb8-a223-4d80-a5b5-56a288db77f6",'
    '"remainingQtyBase":0,"tradeSize":143.2,"exchangeOrderId":"-","tradePriceAvg":0.35147,'
    '"fillPct":100,"finalizeReturnedQtyBase":0,"tradeSide":"sell","exchangeClientOrderId":"-",'
    '"tradeTime":1566429580174,"childOrderCount":0,"fillFeeQuote":0,"itemDateTime":1566429580839,'
    '"baseSymbol":"XRP","strategy":"TWAP","fillQtyQuote":50.330504,"fillQtyBase":143.2,'
    '"priceMarket":"-","exchangePair":"--XRP-CAD","symbol":"XRP-CAD","tradeStatus":"COMPLETE",'
    '"commissionRate":20,"createdAt":1566429580174,"message":"-","priceLimit":0.3491,'
    '"quoteSymbol":"CAD","remainingQtyQuote":-0.339384,'
    '"orderIdParent":"460b8bb8-a223-4d80-a5b5-56a288db77f6"}}'
)
# The User Balances page's REST item (same object a snapshot returns).
DOC_REST_BALANCE = (
    '{"availableBalance":2.4643104026041307,"symbol":"BTC","updatedAt":1656460243147,'
    '"pendingTransfer":0.3214,"totalBalance":2.785710402604131,'
    '"depositAddress":"rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY","pending":0.3214000000000003,'
    '"available":2.4643104026041307}'
)

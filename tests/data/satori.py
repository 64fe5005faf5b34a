"""Satori golden data, verbatim from the docs (docs/venues.md part 2): the example
credentials, the published signing vectors, the push frames and the subscription acks.
"""

from __future__ import annotations

# venues.md §2.2: the docs' credentials and published vectors.
API_KEY = "st_fq6cvRF4fr5tnKiZfrIntRnLfrwxcXjcfr1y8FR7"
WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
PRIVATE_KEY = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
VECTORS = [
    (
        "1725870284179",
        "0xb24d1c6e35ca7532cf5c984397f842684da580e6c3d3fe8212c90fa59dcfaec955700dcaafc45259ca6e181c96c006427fc121af898dbdc10457df65e485a0c61c",
    ),
    (
        "1725870671040",
        "0x2c919fc2ad33889d524b61f5b5a4bc6f2b6d3f3b53505232c8f0e3e12c378dca6f35b217c8018d3da73794df3d428c1f1301c7cdb56b3c0944e0735417849f841c",
    ),
    (
        "clientOrderId=1725693490018&isLong=True&isMarket=True&lever=20&matchType=2&pairName=ETH-USD&positionType=3&price=3100&quantity=0.02&timestamp=1725693490018",
        "0x7c8e2c2e5bfdd29f217e9bf1de4270c4c4aebe85ab09864cf3bef3bcf6f520d70b9e5c251280a2defe77cd5f3d6b64d938906317303a96955d8e3830af9ea03c1c",
    ),
    (
        "symbol=USD&timestamp=1725867599415",
        "0xb89ebe4ad4aabdb7a01e5ad190b341ebc42a011dd416cfc7b4b8ee381eb124ce0147e01a0944afa44e99afd9636b857f30f595478bb665b3a2982b9d94bcc3ef1b",
    ),
]

# The docs' own frames (the websocket account page; docs/venues.md §2.3-2.4).
DOC_ACCOUNT = '{"data":{"availableAmount":"999757.863799","coinId":4,"frozenAmount":"241.506568","logId":0,"operateAmount":"0.00","symbol":"USD"},"event":"api_account","success":true,"symbol":"USD"}'
DOC_ENTRUST = '{"data":{"changeType":"NEW","clientOrderId":"1725870680532","contractPairId":1,"currentEntrustId":180632923,"dealAmount":"0.00","dealQuantity":"0","direction":"LONG","isClose":false,"isMarket":false,"lever":1,"matchType":1,"price":"2000","quantity":"0.02","symbol":"ETH-USD"},"event":"api_entrust","success":true}'
DOC_POSITION = '{"data":{"canClosedQuantity":"0.06","changeType":"NEW","contractPairId":1,"currentQuantity":"0.06","direction":"LONG","marginAmount":"39.890168","marginCallAmount":"7.5","openingPrice":"2300.045","operateQuantity":"0","positionId":4796701,"positionType":3,"symbol":"ETH-USD"},"event":"api_position","success":true}'
DOC_TRADES = '{"data":[{"amount":2576.22013,"contractMatchPairId":19868095,"contractPairId":1,"isLong":false,"pair":"ETH-USD","price":2318.83,"quantity":1.111,"time":"08:38:27","timestamp":1725871107000},{"amount":1054.89475,"contractMatchPairId":19868087,"contractPairId":1,"isLong":true,"pair":"ETH-USD","price":2318.45,"quantity":0.455,"time":"08:38:17","timestamp":1725871097000}],"event":"api_trade","pair":"ETH-USD","success":true}'
DOC_ACKS = [
    (
        '{"event":"api_account_res","method":"SUBSCRIBE","msg":"subscribe success: api_account","success":true,"symbol":"USD"}',
        "api_account:USD",
    ),
    (
        '{"event":"api_entrust_res","method":"SUBSCRIBE","msg":"subscribe success: api_entrust","pair":"ETH-USD","success":true}',
        "api_entrust:ETH-USD",
    ),
    (
        '{"event":"api_position_res","method":"SUBSCRIBE","msg":"subscribe success: api_position","pair":"ETH-USD","success":true}',
        "api_position:ETH-USD",
    ),
    (
        '{"event":"api_trade_res","method":"SUBSCRIBE","msg":"subscribe success: api_trade","pair":"ETH-USD","success":true}',
        "api_trade:ETH-USD",
    ),
]

# §2.3's "Full worked request (Account)", with vector 1's signature written out (the docs
# abbreviate it as 0xb24d…0c61c), and the documented success ack it gets.
DOC_SUBSCRIBE_ACCOUNT = (
    '{"symbol":"USD","method":"SUBSCRIBE","event":"api_account","apiKey":"'
    + API_KEY
    + '","signature":"'
    + VECTORS[0][1]
    + '","timestamp":1725870284179,"signType":"2"}'
)

"""Demo credentials: accepted by the local simulators only, never by a venue.

`bridge simulate` and `bridge demo` use them when no other key is given.
"""

from typing import Final

AQUANOW_KEY: Final = "demo-key"
AQUANOW_SECRET: Final = "demo-secret-not-real"  # noqa: S105 - simulator-only credential
SATORI_KEY: Final = "st_demo_key"
# The Satori docs' published example key (docs/venues.md §2.2): public, never a real account's.
SATORI_PRIVATE_KEY: Final = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SATORI_WALLET: Final = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"

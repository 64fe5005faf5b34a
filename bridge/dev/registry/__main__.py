"""``python -m bridge.dev.registry``: run Apicurio Registry locally until Ctrl-C / SIGTERM.

Prints ``SCHEMA_REGISTRY_URL=http://127.0.0.1:<port>/apis/ccompat/v7`` on stdout; everything
else goes to stderr. ``--fetch-only`` only fills the cache (CI pre-fetch).
"""

import sys

from bridge.dev.jvm import serve
from bridge.dev.registry.server import LocalRegistry, ensure_registry

if __name__ == "__main__":
    sys.exit(
        serve(
            None,
            prog="python -m bridge.dev.registry",
            description="Run Apicurio Registry (Confluent-compatible API) from Maven Central.",
            what="Apicurio Registry",
            fetch=ensure_registry,
            server=lambda timeout: LocalRegistry(startup_timeout=timeout),
            announce=lambda registry: f"SCHEMA_REGISTRY_URL={registry.url}",
            startup_timeout=90.0,
        )
    )

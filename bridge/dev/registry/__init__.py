"""A real schema registry (Apicurio, Confluent API) for tests and demos, without Docker."""

from bridge.dev.registry.server import (
    APICURIO_VERSION,
    CCOMPAT_PATH,
    DevRegistryError,
    LocalRegistry,
    RegistryEndpoint,
    ensure_registry,
    registry_endpoint,
)

__all__ = [
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "DevRegistryError",
    "LocalRegistry",
    "RegistryEndpoint",
    "ensure_registry",
    "registry_endpoint",
]

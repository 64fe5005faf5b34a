"""The lab: everything that is not the service, fenced off from it.

Venue simulators (`simulator/`), the JVM dev servers the tests and the demo use (`kafka/`,
`registry/`, their shared launcher `jvm.py`) and `bridge demo` (`demo.py`). No service module
imports this package (tests/unit/test_architecture.py holds that): only the `simulate` and
`demo` handlers of `bridge.cli` import it, lazily. The container image deletes it.
"""

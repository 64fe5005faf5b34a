"""README "Upgrading in single-object mode: consumers first", shown with the README's own
consumer snippet: holding only the files it had before, it cannot decode a record of a newer
schema version (the fingerprint is unknown); given the new `.avsc` file first, it decodes the
new records and still the old ones."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from bridge.codec import Codec, SchemaStore
from tests.records import SAMPLE_BALANCE as BALANCE
from tests.tools import ROOT

pytestmark = pytest.mark.unit


def readme_consumer(schemas: Path) -> Any:
    """The README's snippet, run as written, in a directory holding `schemas/`."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Single-object mode", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {}
    source = code[1].replace('pathlib.Path("schemas")', f"pathlib.Path({str(schemas)!r})")
    exec(compile(source, "README.md", "exec"), namespace)  # noqa: S102 - the README's code
    return namespace["decode"]


def old_consumer_files(tmp_path: Path) -> Path:
    """Every topic's schemas but the newest version of balances: a consumer of the release
    before the one that added it."""
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    newest = max((schemas / "balances").glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    assert newest.stem != "v1", "needs a topic with two versions"
    newest.unlink()
    return schemas


def test_consumers_must_get_the_new_schema_files_before_the_bridge(tmp_path: Path) -> None:
    store = SchemaStore.load()
    new_record = Codec(store).value(BALANCE)  # what the upgraded bridge writes
    written = store.by_fingerprint(new_record[2:10])
    assert written is not None
    assert written.version >= 2

    schemas = old_consumer_files(tmp_path)
    # Wrong order: the bridge upgraded first, the consumer still has the old files.
    with pytest.raises(KeyError):
        readme_consumer(schemas)(new_record)

    # Right order: the consumer gets the new file first (keeping the old ones).
    shutil.copy(ROOT / "schemas" / "balances" / f"v{written.version}.avsc", schemas / "balances")
    decoded = readme_consumer(schemas)(new_record)
    assert decoded["asset"] == BALANCE.asset

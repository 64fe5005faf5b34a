"""Print the path of the newest CPython on this machine that is newer than the one running this
script (CI runs it with Debian's own python3), or fail saying what was found.

Looks in pyenv's versions ($PYENV_ROOT or ~/.pyenv) and for python3.N on PATH. A candidate
counts only if it runs, is CPython, satisfies the package's requires-python (3.11+) and can
create a virtualenv (venv + ensurepip), because `make test` starts by making one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = (
    "import ensurepip, platform, sys, venv; "
    "print(platform.python_implementation(), *sys.version_info[:3])"
)


def candidates() -> set[Path]:
    found: set[Path] = set()
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found.update(pyenv.glob("versions/*/bin/python3"))
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        found.update(
            p for p in Path(directory or ".").glob("python3.[0-9]*") if p.name[8:].isdigit()
        )
    return {p for p in found if p.is_file() and os.access(p, os.X_OK)}


def version(python: Path) -> tuple[int, int, int] | None:
    try:
        done = subprocess.run(  # noqa: S603 - a candidate interpreter, fixed arguments
            [str(python), "-c", PROBE], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 4 or words[0] != "CPython":
        return None  # a pyenv shim for another version, PyPy, or no venv/ensurepip
    major, minor, micro = (int(w) for w in words[1:])
    return major, minor, micro


def main() -> int:
    floor = sys.version_info[:3]
    usable = {p: v for p in candidates() if (v := version(p)) and v >= (3, 11, 0)}
    newer = {p: v for p, v in usable.items() if v > floor}
    if not newer:
        shown = ", ".join(f"{p} ({'.'.join(map(str, v))})" for p, v in sorted(usable.items()))
        print(
            f"newest-python: no CPython newer than {'.'.join(map(str, floor))} "
            f"({sys.executable}) found; usable: {shown or 'none'}",
            file=sys.stderr,
        )
        return 1
    best = max(newer, key=lambda p: (newer[p], str(p)))
    print(best)
    return 0


if __name__ == "__main__":
    sys.exit(main())

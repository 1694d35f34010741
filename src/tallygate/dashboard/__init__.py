"""The dashboard's built assets (a Vite build of /dashboard at the repository root).

`make dashboard` (run by `make run` and `make install` when the build is missing or older than
its sources) writes them to `static/`; the Python package carries them as package data.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"


def built() -> bool:
    return (STATIC_DIR / "index.html").is_file()

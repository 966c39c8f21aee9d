"""Shared fixtures.

Real data for integration tests lives outside the repository in ``../shared/data`` (see its README.md). Tests that read
it are marked ``@pytest.mark.data`` and get the folder from :func:`shared_data_dir` / the ``shared_data`` fixture, which
skip with a clear message when it is absent, or fail when the environment variable ``STORM_REQUIRE_DATA=1`` (CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


def shared_data_dir(*parts: str) -> Path:
    """``../shared/data/<parts>`` (relative to the repository root); skip, or fail under STORM_REQUIRE_DATA=1, if absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = (
            f"real data not found at {path}: put the shared data folder at ../shared/data next to the repository "
            "(see its README.md)"
        )
        if os.environ.get("STORM_REQUIRE_DATA") == "1":
            pytest.fail(f"{message}; STORM_REQUIRE_DATA=1 requires it.", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder (skips when absent unless STORM_REQUIRE_DATA=1)."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def shared_data_path():
    """:func:`shared_data_dir` as a fixture, for tests that need one sub-folder: ``shared_data_path("her2st")``."""
    return shared_data_dir


@pytest.fixture(scope="module", autouse=True)
def orientations(request):
    """``st.settings.orientations`` for the module: 8 (the default), or 1 where the module sets ``ONE_PASS = True``.

    Modules about something else than orientation (heads, CLI writes, scales of predictions) run one pass per niche:
    the eight-orientation average costs 5-9x with images and has its own tests (``tests/tl/test_invariance.py``,
    ``tests/tl/test_encode.py``). The setting is restored after every module.
    """
    import storm as st

    before = st.settings.orientations
    st.settings.orientations = 1 if getattr(request.module, "ONE_PASS", False) else 8
    yield st.settings.orientations
    st.settings.orientations = before

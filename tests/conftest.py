"""Test-suite settings.

* The suite compares results in float64: it enables jax's x64 mode for itself.
  ntkdsl never changes ``jax.config`` (tests/test_jax_config.py checks that in fresh
  processes, with x64 off and on); this switch is the test process's own choice, as a
  user's script would make it.
* The default-run tests that take the longest (measured with ``--durations``) are
  listed in ``slow_tests.txt`` and get the ``slow`` mark, so they run with ``-m slow``
  (``make test-all``) like the tests marked in their own files.
* ntkdsl's on-disk compile cache goes to a folder of this run (shared by its xdist
  workers and the CLI subprocesses they start), never the user's ``~/.cache/ntkdsl``;
  a ``NTKDSL_CACHE_DIR`` already set is kept.
"""

import os
import pathlib
import tempfile

import jax
import pytest

jax.config.update("jax_enable_x64", True)

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("NTKDSL_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"ntkdsl-test-cache-{_RUN}"))

_SLOW = {line.strip() for line in
         (pathlib.Path(__file__).parent / "slow_tests.txt").read_text().splitlines()
         if line.strip() and not line.startswith("#")}


def pytest_collection_modifyitems(config, items):
    """Mark the node ids of ``slow_tests.txt`` slow."""
    for item in items:
        if item.nodeid in _SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def no_disk_cache():
    """ntkdsl's on-disk compile cache off and its counters reset, for tests that count
    compiles (a hit from an earlier test would hide one)."""
    from ntkdsl import compile_cache as cc

    cc.set_cache_dir(False)
    cc.reset_stats()
    yield cc
    cc.set_cache_dir(None)


"""The test suite compares results in float64: it enables jax's x64 mode for itself.

ntkdsl never changes ``jax.config`` (tests/test_jax_config.py checks that in fresh
processes, with x64 off and on); this switch is the test process's own choice, as
a user's script would make it.
"""

import jax

jax.config.update("jax_enable_x64", True)

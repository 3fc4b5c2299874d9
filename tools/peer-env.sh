#!/usr/bin/env bash
# Create a side Python environment holding the peer library, neural-tangents
# 0.6.5, with the versions it still works with (jax 0.4.23; newer jax breaks it).
# Usage: tools/peer-env.sh [DIR]   (default DIR: .peer-venv, ~2.6 GB)
# Then:  DIR/bin/python your_script.py
# Use it to generate golden files and to benchmark side by side; the project's
# own environment must not depend on it.
set -euo pipefail
dir="${1:-.peer-venv}"
py="${PYTHON:-python3}"
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import neural_tangents' 2>/dev/null; then
  echo "peer environment ready: $dir"; exit 0
fi
"$py" -m venv "$dir"
"$dir/bin/pip" install -q --disable-pip-version-check neural-tangents==0.6.5
"$dir/bin/pip" install -q --disable-pip-version-check \
  "jax==0.4.23" "jaxlib==0.4.23" "numpy<2" "scipy<1.13" "tf2jax==0.3.5"
"$dir/bin/python" - <<'PY'
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
_, _, k = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
import jax.numpy as jnp
print("peer environment ready:", k(jnp.ones((2, 3)), None, "ntk").shape)
PY

# ruff: noqa  (the peer's documentation, kept as written)
# neural-tangents 0.6.5 README, "5-Minute intro", as documented; only the imports differ
# (make_golden_compat.py runs this file with the peer's imports). Results are
# collected in RESULTS for the comparison.
from jax import random
from ntkdsl.compat import stax

init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Dense(512), stax.Relu(),
    stax.Dense(512), stax.Relu(),
    stax.Dense(1)
)

key1, key2 = random.split(random.PRNGKey(1))
x1 = random.normal(key1, (10, 100))
x2 = random.normal(key2, (20, 100))

kernel = kernel_fn(x1, x2, 'nngp')
RESULTS = {"kernel": kernel}

# Get kernel of a single type
nngp = kernel_fn(x1, x2, 'nngp') # (10, 20) jnp.ndarray
ntk = kernel_fn(x1, x2, 'ntk') # (10, 20) jnp.ndarray

# Get kernels as a namedtuple
both = kernel_fn(x1, x2, ('nngp', 'ntk'))
both.nngp == nngp  # True
both.ntk == ntk  # True

# Unpack the kernels namedtuple
nngp, ntk = kernel_fn(x1, x2, ('nngp', 'ntk'))
RESULTS.update(nngp=nngp, ntk=ntk, both_nngp=both.nngp, both_ntk=both.ntk)

kernel = kernel_fn(x1, x2)
# (the README's next line, `kernel = kernel_fn(kernel)`, feeds a Kernel back in;
# ntkdsl.compat does not support Kernel inputs, see docs/migrating.md)
RESULTS.update(kernel_obj_nngp=kernel.nngp, kernel_obj_ntk=kernel.ntk)

import ntkdsl.compat as nt

x_train, x_test = x1, x2
y_train = random.uniform(key1, shape=(10, 1))  # training targets

predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train,
                                                      y_train)

y_test_nngp = predict_fn(x_test=x_test, get='nngp')
# (20, 1) jnp.ndarray test predictions of an infinite Bayesian network

y_test_ntk = predict_fn(x_test=x_test, get='ntk')
# (20, 1) jnp.ndarray test predictions of an infinite continuous
# gradient descent trained network at convergence (t = inf)

# Get predictions as a namedtuple
both = predict_fn(x_test=x_test, get=('nngp', 'ntk'))
both.nngp == y_test_nngp  # True
both.ntk == y_test_ntk  # True

# Unpack the predictions namedtuple
y_test_nngp, y_test_ntk = predict_fn(x_test=x_test, get=('nngp', 'ntk'))
RESULTS.update(y_test_nngp=y_test_nngp, y_test_ntk=y_test_ntk, pred_both_nngp=both.nngp,
               pred_both_ntk=both.ntk)

# the README's first stax example, with the triple: outputs of the finite network
key = random.PRNGKey(1)
x = random.normal(key, (10, 100))
_, params = init_fn(key, input_shape=x.shape)
y = apply_fn(params, x)  # (10, 1) jnp.ndarray outputs of the neural network
RESULTS["y"] = y

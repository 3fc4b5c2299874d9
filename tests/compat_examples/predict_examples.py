# ruff: noqa  (the peer's documentation, kept as written)
# The peer's predict docstring examples (gradient_descent_mse, gradient_descent) on a stax
# net, and each remaining predict / top-level function the way its documentation calls it;
# only the imports differ between the two runs. Results are collected in RESULTS.
import jax
import jax.numpy as jnp
from jax import random
import ntkdsl.compat as nt
from ntkdsl.compat import stax

key1, key2, key3 = random.split(random.PRNGKey(0), 3)
x_train = random.normal(key1, (8, 6))
x_test = random.normal(key2, (4, 6))
y_train = random.uniform(key3, (8, 2))

init_fn, f, kernel_fn = stax.serial(
    stax.Dense(64, W_std=1.5, b_std=0.05), stax.Erf(),
    stax.Dense(64, W_std=1.5, b_std=0.05), stax.Relu(),
    stax.Dense(2, W_std=1.5, b_std=0.05))
_, params = init_fn(key3, x_train.shape)
RESULTS = {}

# predict.gradient_descent_mse's docstring example
t = 1e-7
kernel_fn_emp = nt.empirical_ntk_fn(f)
k_train_train = kernel_fn_emp(x_train, None, params)
k_test_train = kernel_fn_emp(x_test, x_train, params)
predict_fn = nt.predict.gradient_descent_mse(k_train_train, y_train)
fx_train_0 = f(params, x_train)
fx_test_0 = f(params, x_test)
fx_train_t, fx_test_t = predict_fn(t, fx_train_0, fx_test_0, k_test_train)
RESULTS.update(emp_ntk_train=k_train_train, emp_ntk_test=k_test_train,
               gd_train_1e7=fx_train_t, gd_test_1e7=fx_test_t)
fx_train_t, fx_test_t = predict_fn(jnp.array([0.5, 3.0]), fx_train_0, fx_test_0, k_test_train)
RESULTS.update(gd_train_t=fx_train_t, gd_test_t=fx_test_t)
RESULTS["gd_test_inf"] = predict_fn(None, None, fx_test_0, k_test_train)
RESULTS["gd_train_only"] = predict_fn(2.0, fx_train_0)

# predict.gradient_descent's docstring example, without momentum
learning_rate = 1e-2
from jax.nn import log_softmax
cross_entropy = lambda fx, y_hat: -jnp.mean(log_softmax(fx) * y_hat)
predict_fn = nt.predict.gradient_descent(cross_entropy, k_train_train, y_train,
                                         learning_rate)
fx_train_t, fx_test_t = predict_fn(jnp.array([10.0, 100.0]), fx_train_0, fx_test_0,
                                   k_test_train)
RESULTS.update(ce_train=fx_train_t, ce_test=fx_test_t)

# the analytic kernels, the infinite ensemble and GP inference
kdd = kernel_fn(x_train, None, ('nngp', 'ntk'))
ktd = kernel_fn(x_test, x_train, ('nngp', 'ntk'))
ktt = kernel_fn(x_test, None, 'nngp')
RESULTS.update(nngp_dd=kdd.nngp, ntk_dd=kdd.ntk, nngp_td=ktd.nngp, ntk_td=ktd.ntk,
               nngp_tt=ktt)
predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train,
                                                      learning_rate=2.0, diag_reg=1e-3)
out = predict_fn(t=jnp.array([1.0, 20.0]), x_test=x_test, get=('nngp', 'ntk'),
                 compute_cov=True)
RESULTS.update(ens_nngp_mean=out.nngp.mean, ens_nngp_cov=out.nngp.covariance,
               ens_ntk_mean=out.ntk.mean, ens_ntk_cov=out.ntk.covariance)
out = predict_fn(t=None, x_test=x_test, get='ntk', compute_cov=True)
RESULTS.update(ens_inf_mean=out.mean, ens_inf_cov=out.covariance)
RESULTS["ens_nngp_inf"] = predict_fn(x_test=x_test, get='nngp')

predict_fn = nt.predict.gp_inference(kdd, y_train, diag_reg=1e-3)
out = predict_fn(('nngp', 'ntk'), ktd, ktt)
RESULTS.update(gp_nngp_mean=out.nngp.mean, gp_nngp_cov=out.nngp.covariance,
               gp_ntk_mean=out.ntk.mean, gp_ntk_cov=out.ntk.covariance)
predict_fn = nt.predict.gp_inference(kdd.ntk, y_train, diag_reg=1e-2,
                                     diag_reg_absolute_scale=True)
RESULTS["gp_abs_mean"] = predict_fn('ntk', ktd.ntk)

RESULTS["max_lr"] = nt.predict.max_learning_rate(kdd.ntk)
RESULTS["max_lr_momentum"] = nt.predict.max_learning_rate(kdd.ntk, y_train_size=16,
                                                          momentum=0.9)

# batching, Monte Carlo, Taylor expansions
kernel_fn_batched = nt.batch(kernel_fn, batch_size=4)
RESULTS["batched_ntk"] = kernel_fn_batched(x_train, x_test, 'ntk')
mc_fn = nt.monte_carlo_kernel_fn(init_fn, f, key1, 3)
mc = mc_fn(x_train, x_test, ('nngp', 'ntk'))
RESULTS.update(mc_nngp=mc.nngp, mc_ntk=mc.ntk)
emp = nt.empirical_kernel_fn(f)(x_train, x_test, None, params)
RESULTS.update(emp_nngp=emp.nngp, emp_ntk=emp.ntk)
RESULTS["emp_nngp_fn"] = nt.empirical_nngp_fn(f)(x_train, None, params)
params_1 = jax.tree_util.tree_map(lambda p: 1.05 * p, params)
RESULTS["lin"] = nt.linearize(f, params)(params_1, x_test)
RESULTS["taylor2"] = nt.taylor_expand(f, params, 2)(params_1, x_test)

"""Modified Bessel functions I_nu for integer and half-integer order, in log space.

JAX ships only ``i0e`` and ``i1e``. The von Mises-Fisher scores on S^(d-1) need
``I_(nu+1)(z) / I_nu(z)`` and ``log I_nu(z)`` with ``nu = d/2 - 1``, which is an integer
(even d) or a half-integer (odd d). Both follow from ``I_0, I_1`` (or the closed forms of
``I_(1/2), I_(3/2)``) by the ratio recurrence ``r_nu = 1 / r_(nu-1) - 2 nu / z``, with a
series for small ``z`` where the recurrence cancels. Everything is exponentially scaled,
so ``z`` up to 1e300 is fine.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import gammaln, i0e, i1e

_SMALL_Z = 1e-3
_LANGEVIN_SERIES_Z = 0.1


def _check_order(nu: float) -> int:
    twice = 2 * nu
    if twice != int(twice) or nu < 0:
        raise ValueError(f"Bessel order nu must be an integer or half-integer >= 0, got {nu}")
    return int(twice)


def _ratio_base(nu0: float, z):
    """I_(nu0+1)(z) / I_nu0(z) for nu0 in {0, 1/2}, z > 0."""
    if nu0 == 0:
        return i1e(z) / i0e(z)
    # I_(3/2) / I_(1/2) = coth z - 1/z (the Langevin function). The difference cancels for
    # small z (relative error ~1e-16 / z^2: 1e-11 at z = 2e-3), so below z = 0.1 use its
    # Taylor series to z^9 (truncation below 1e-15 relative there).
    zs = jnp.maximum(z, _LANGEVIN_SERIES_Z)
    big = 1.0 / jnp.tanh(zs) - 1.0 / zs
    z2 = z * z
    series = z * (1 / 3 + z2 * (-1 / 45 + z2 * (2 / 945 + z2 * (-1 / 4725 + z2 * 2 / 93555))))
    return jnp.where(z < _LANGEVIN_SERIES_Z, series, big)


_BACKWARD_TERMS = 120


def _backward_ratio(nu: float, z):
    """I_(nu+1)/I_nu by the continued fraction r_k = z / (2 (k + 1) + z r_(k+1)), run
    downward from order nu + 120 (stable; accurate to 1e-14 for z up to about 100)."""
    ratio = z / (2 * (nu + _BACKWARD_TERMS + 1))
    for k in range(_BACKWARD_TERMS, -1, -1):
        ratio = z / (2 * (nu + k + 1) + z * ratio)
    return ratio


def bessel_ratio(nu: float, z):
    """``I_(nu+1)(z) / I_nu(z)`` for ``z >= 0``; ``nu`` a static integer or half-integer.

    Uses the downward continued fraction for ``z < 8 (nu + 1)`` and the upward ratio
    recurrence from the closed form of order 0 or 1/2 above, where it is stable.

    Example:
        >>> float(bessel_ratio(0, 1.0))  # I_1(1) / I_0(1)
        0.44638...
    """
    twice = _check_order(nu)
    z = jnp.asarray(z)
    nu0 = 0.0 if twice % 2 == 0 else 0.5
    if nu == nu0:  # closed forms, accurate for every z
        return _ratio_base(nu0, z)
    switch = 8.0 * (nu + 1)
    z_up = jnp.maximum(z, switch)
    ratio = _ratio_base(nu0, z_up)
    order = nu0
    while order < nu:
        order += 1
        ratio = 1.0 / ratio - 2 * order / z_up
    return jnp.where(z < switch, _backward_ratio(nu, jnp.minimum(z, switch)), ratio)


def log_bessel_iv(nu: float, z):
    """``log I_nu(z)`` for ``z > 0`` (``-inf`` limit handled by the caller at ``z = 0``).

    Example:
        >>> float(log_bessel_iv(0, 2.0))  # log I_0(2) = log 2.2795853...
        0.82396...
    """
    twice = _check_order(nu)
    z = jnp.asarray(z)
    zs = jnp.maximum(z, _SMALL_Z)
    if twice % 2 == 0:
        log_i = jnp.log(i0e(zs)) + zs
        order = 0.0
    else:
        # I_(1/2)(z) = sqrt(2 / (pi z)) sinh z
        log_i = 0.5 * jnp.log(2 / (jnp.pi * zs)) + zs + jnp.log1p(-jnp.exp(-2 * zs)) - jnp.log(2.0)
        order = 0.5
    while order < nu:
        log_i = log_i + jnp.log(bessel_ratio(order, zs))
        order += 1
    # Small z: I_nu(z) ~ (z/2)^nu / Gamma(nu + 1) (1 + z^2 / (4 (nu + 1))).
    small = (
        nu * jnp.log(jnp.maximum(z, 1e-300) / 2)
        - gammaln(nu + 1.0)
        + jnp.log1p(z**2 / (4 * (nu + 1)))
    )
    return jnp.where(z < _SMALL_Z, small, log_i)

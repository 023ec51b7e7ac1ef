"""An example feature-map plug-in for mfld: a Gaussian bump, which is not a ridge function.

    h(x; w) = exp(-||x - w||^2 / 2),      grad_w h(x; w) = h(x; w) (x - w),      w in R^d

Use it with ``model.feature = "bump_feature:BUMP"`` (this file on the Python path), or install a
package that declares it under the entry-point group ``mfld.feature_maps``::

    [project.entry-points."mfld.feature_maps"]
    bump = "bump_feature:BUMP"

mfld checks it once when it is first used (shapes, finite values, gradients against central
differences).
"""

from __future__ import annotations

from mfld.model.backend import namespace


class Bump:
    """The Gaussian bump feature map; the arrays may be NumPy's or CuPy's."""

    name = "bump"

    def dim(self, d: int) -> int:
        return d

    def augment(self, X):
        return X

    def evaluate(self, X, W):
        """``(cache, H)``: the cache is ``H`` itself, ``H[j, i] = h(x_j; w_i)``."""
        xp = namespace(X, W)
        sq = (X * X).sum(axis=1)[:, None] + (W * W).sum(axis=1)[None, :] - 2.0 * X @ W.T
        H = xp.exp(-0.5 * xp.maximum(sq, 0.0))
        return H, H

    def pullback(self, X, W, cache, H, M):
        """``G[i] = sum_j M[j, i] h_ji (x_j - w_i)``."""
        MH = M * H
        return MH.T @ X - MH.sum(axis=0)[:, None] * W

    def contract_grad(self, X, W, cache, H, C, A):
        """``G[i] = sum_j sum_t C[j, t] A[i, t] h_ji (x_j - w_i)``."""
        return self.pullback(X, W, cache, H, C @ A.T)

    def __call__(self, X, W):
        return self.evaluate(self.augment(X), W)[1]


BUMP = Bump()

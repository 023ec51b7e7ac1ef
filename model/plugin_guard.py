"""A plug-in feature map watched while it runs.

:func:`~mfld.model.features.check_feature_map` tries a plug-in once, on a few small inputs, when it is loaded.
Foreign code can still fail later: return NaN or infinity far from the origin, a wrong shape for a block size it
was not tried at, or raise after some calls. Without a watch such a fault surfaces as a diverged run ("reduce
time.eta"), a NumPy broadcasting error, or a traceback deep in mfld, none of which names the plug-in. The guard
checks every result of the plug-in's methods (its shape and that it is finite) and re-raises its exceptions,
naming the plug-in, the method, and the parameters it was called with. The built-in maps are not wrapped: they
are mfld's own code, tested, and their results are not checked twice.
"""

from __future__ import annotations

from typing import Any

from .backend import Array, namespace


class PluginError(ValueError):
    """A plug-in feature map failed during a run (after it passed its check when loaded)."""


class Guarded:
    """``fm`` with each result checked (see the module doc); other attributes are ``fm``'s."""

    def __init__(self, fm: Any, name: str) -> None:  # any object with the FeatureMap methods (checked when loaded)
        self._fm = fm
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        if attr == "_fm":  # not set yet (a copy or an unpickling in progress): no recursion through ourselves
            raise AttributeError(attr)
        return getattr(self._fm, attr)

    def _fault(self, method: str, what: str) -> PluginError:
        return PluginError(
            f"feature map {self.name!r} failed in {method}: {what}. It passed its check when loaded (small inputs); "
            "the fault is the plug-in's: fix it, or bound its parameters (model.lam_w)"
        )

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._fm, method)(*args)
        except PluginError:
            raise
        except Exception as e:  # foreign code: whatever it raises is reported as its fault
            raise self._fault(method, f"{type(e).__name__}: {str(e) or '(no message)'}") from e

    def _checked(self, method: str, out: Any, shape: tuple[int, int], W: Array) -> Array:
        if getattr(out, "shape", None) != shape:
            raise self._fault(method, f"it returned shape {getattr(out, 'shape', type(out).__name__)}, not {shape}")
        xp = namespace(W)
        if not bool(xp.all(xp.isfinite(out))):
            largest = float(xp.max(xp.sqrt(xp.sum(W * W, axis=1)))) if W.shape[0] else 0.0
            raise self._fault(
                method,
                f"it returned NaN or infinite values for N = {W.shape[0]} parameters w (largest |w| {largest:.3g})",
            )
        return out

    def dim(self, d: int) -> int:
        return int(self._call("dim", d))

    def augment(self, X: Array) -> Array:
        out: Array = self._call("augment", X)
        return out

    def evaluate(self, Xa: Array, W: Array) -> tuple[Array, Array]:
        out = self._call("evaluate", Xa, W)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise self._fault("evaluate", f"it returned {type(out).__name__}, not the pair (cache, H)")
        return out[0], self._checked("evaluate", out[1], (Xa.shape[0], W.shape[0]), W)

    def contract_grad(self, Xa: Array, W: Array, cache: Array, H: Array, C: Array, A: Array) -> Array:
        out = self._call("contract_grad", Xa, W, cache, H, C, A)
        return self._checked("contract_grad", out, tuple(W.shape), W)

    def pullback(self, Xa: Array, W: Array, cache: Array, H: Array, M: Array) -> Array:
        return self._checked("pullback", self._call("pullback", Xa, W, cache, H, M), tuple(W.shape), W)

    def __call__(self, X: Array, W: Array) -> Array:
        return self.evaluate(self.augment(X), W)[1]

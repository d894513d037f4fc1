"""The differential check: a network's compiled backends against its reference backend.

Every backend gets the same parameters (drawn, then perturbed so that BatchNorm and LayerNorm weights are not
all ones), the same inputs and the same sequence of calls, so their dropout seeds and BatchNorm statistics
stay in step. Each stage compares what a user sees:

    forward     the declared outputs and the loss (train mode: running statistics move too)
    gradients   model.gradients: the loss, every parameter's gradient and every float input's
    sgd, adam   three training steps each (SGD with momentum, Adam): the loss of every step, then every
                parameter, buffer and piece of optimiser state
    eval        forward in eval mode, on the running statistics the steps left

Tolerances are float32's, relative to the largest value compared: |got - want| <= RTOL * |want| + ATOL *
max(1, max |want|), so one loose element among large ones cannot hide, and tiny values are not held to more
digits than float32 carries through a few dozen roundings.

Some networks amplify rounding without bound: a gradient that is zero in exact arithmetic (a bias followed by
a BatchNorm, which removes it) comes out as noise of either sign, and Adam divides it by its own size. So a
float32 difference of at most ROUNDING_SIZED (relative to the scale) is checked again in float64, where both
backends must agree to RTOL_64 and ATOL_64: a compiler error does not go away in float64, rounding does.
"""

from __future__ import annotations

from contextlib import ExitStack

import netc
import numpy as np
from netc.compiler.graph_queries import index_bounds
from parity import EMULATED, available

RTOL, ATOL = 1e-4, 2e-5
RTOL_64, ATOL_64 = 1e-8, 1e-9
ROUNDING_SIZED = 1e-2
STAGES = ("forward", "gradients", "sgd", "adam", "eval")
OPTIMIZERS = {
    "sgd": lambda: netc.optim.SGD(lr=0.1, momentum=0.9),
    # eps well above float32's noise: a gradient that is zero up to rounding must not become a full step
    "adam": lambda: netc.optim.Adam(lr=0.01, eps=0.1),
}
BACKENDS = ("cpu", EMULATED)


class Mismatch(AssertionError):
    """A compiled backend disagrees with the reference, or fails where the reference does not; `relative`:
    the largest difference over the scale (infinite for a failure)."""

    def __init__(self, message: str, relative: float = float("inf")):
        super().__init__(message)
        self.relative = relative


def compile_all(source: str, batch: int, backends, path: str = "generated.net", precision="float32") -> dict:
    """A model per backend name ("reference", "cpu", "cuda-emulated") of the network in `source`; the caller
    makes the emulated backend available (parity.available)."""
    network = netc.load(path, text=source)
    return {
        name: netc.compile(network, batch=batch, backend=name, precision=precision)
        for name in ("reference", *backends)
    }


def perturbed_state(model, rng: np.random.Generator) -> dict:
    state = {}
    for name, value in model.state_dict().items():
        if value.dtype.kind == "f":
            value = value + rng.uniform(-0.3, 0.3, value.shape).astype(value.dtype)
            if name.endswith("running_var"):
                value = np.abs(value) + 0.5
        state[name] = value
    return state


def random_inputs(model, rng: np.random.Generator) -> dict:
    """Standard normal floats; i64 inputs within the bound of the loss or Embedding that reads them."""
    graph = model.graph
    bounds = index_bounds(graph)
    inputs = {}
    for name in model.input_names():
        leaf = graph.inputs[name]
        if leaf.dtype == "i64":
            inputs[name] = rng.integers(0, bounds.get(name, (2,))[0], size=leaf.shape, dtype=np.int64)
        else:
            inputs[name] = rng.standard_normal(leaf.shape).astype(np.float32)
    return inputs


def host(value):
    """A result as NumPy: the cuda backend returns CuPy arrays, which are read with .get()."""
    return value.get() if hasattr(value, "get") and type(value) is not np.ndarray else value


def compare(got: dict, want: dict, where: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    if set(got) != set(want):
        raise Mismatch(f"{where}: keys {sorted(got)} differ from the reference's {sorted(want)}")
    for key, expected in want.items():
        a, b = np.asarray(host(got[key]), dtype=np.float64), np.asarray(expected, dtype=np.float64)
        finite = np.abs(b[np.isfinite(b)])
        scale = max(1.0, float(np.max(finite))) if finite.size else 1.0
        if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol * scale, equal_nan=True):
            worst = float(np.nanmax(np.abs(a - b))) if a.shape == b.shape and a.size else float("inf")
            raise Mismatch(
                f"{where}: {key} differs from the reference (max |diff| {worst:.3g}, scale {scale:.3g})"
                f"\n got  {np.array2string(a.ravel()[:8], precision=5)}"
                f"\n want {np.array2string(b.ravel()[:8], precision=5)}",
                worst / scale if np.isfinite(worst) else float("inf"),
            )


def run_stage(model, stage: str, inputs: dict) -> dict:
    """What a user sees after one stage, as {name: array}."""
    if stage == "forward":
        return model.train().forward(**inputs)
    if stage == "eval":
        return model.eval().forward(**inputs)
    if stage == "gradients":
        floats = [n for n in model.input_names() if model.graph.inputs[n].dtype != "i64"]
        return model.train().gradients(inputs_wrt=floats, **inputs)
    trainer = model.train().trainer(OPTIMIZERS[stage]())
    out = {f"loss of step {i + 1}": np.float64(trainer.step(**inputs)) for i in range(3)}
    out.update({f"state {k}": v for k, v in model.state_dict().items()})
    optimizer_state = trainer.state_dict()["state"]
    out.update({f"{stage} {p}.{k}": v for p, entry in optimizer_state.items() for k, v in entry.items()})
    return out


def check_network(
    source: str, batch: int, stages=STAGES, backends=BACKENDS, seed: int = 0, path: str = "generated.net"
) -> None:
    """Raise Mismatch where a backend's results differ from the reference's, stage by stage (see the module's
    docstring for the float64 second look)."""
    with ExitStack() as backends_available:
        for name in backends:
            backends_available.enter_context(available(name))
        try:
            compare_stages(compile_all(source, batch, backends, path), stages, backends, seed)
        except Mismatch as in_float32:
            if in_float32.relative > ROUNDING_SIZED:
                raise
            models = compile_all(source, batch, backends, path, "float64")
            compare_stages(models, stages, backends, seed, RTOL_64, ATOL_64)


def compare_stages(models: dict, stages, backends, seed: int, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Run every stage on every model from the same state and inputs; raise Mismatch at the first difference."""
    reference = models["reference"]
    rng = np.random.default_rng(seed)
    state, inputs = perturbed_state(reference, rng), random_inputs(reference, rng)
    for model in models.values():
        model.load_state_dict(state)
    for stage in stages:
        if stage in OPTIMIZERS and not reference.graph.params:
            continue  # nothing to train
        want = run_stage(reference, stage, inputs)
        want_state = reference.state_dict()
        for name in backends:
            try:
                got = run_stage(models[name], stage, inputs)
            except Exception as error:
                raise Mismatch(f"{name}, {stage}: {type(error).__name__}: {error}") from error
            compare(got, want, f"{name}, {stage}", rtol, atol)
            compare(models[name].state_dict(), want_state, f"{name}, state after {stage}", rtol, atol)

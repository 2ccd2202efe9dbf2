"""The end-to-end demo: train the 784-256-10 MLP on scikit-learn's digits, export, validate and time it.

scikit-learn's digits (1,797 8x8 images, shipped inside the package, no download)
are upscaled to MNIST's 28x28 so the model has the seed's 784 inputs.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .errors import MlxportError

TEST_FRACTION = 0.2


class MissingDependencyError(MlxportError):
    """An optional dependency of the demo is not installed."""

    hint = 'Install the demo extra: pip install "mlxport[demo]" (or pip install ".[demo]" in a checkout).'


def load_digits_784(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): digits as float32 [N, 784] in [0, 1], int32 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MissingDependencyError(
            f"the demo needs scikit-learn for its bundled digits data set, and it cannot be imported ({exc})"
        ) from exc
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    # 8x8 -> 24x24 by repeating each pixel 3x3, then a 2-pixel border -> 28x28 (MNIST-like).
    big = np.kron(images, np.ones((1, 3, 3), dtype=np.float32))
    x = np.pad(big, ((0, 0), (2, 2), (2, 2))).reshape(len(images), 784)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = int(len(x) * TEST_FRACTION)
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


class MLP(nn.Module):
    """The seed model: Linear 784->256, ReLU, Linear 256->10."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(784, 256)
        self.l2 = nn.Linear(256, 10)

    def __call__(self, x: mx.array) -> mx.array:
        return self.l2(nn.relu(self.l1(x)))


def train(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, batch: int = 64,
          lr: float = 1e-3) -> float:
    """Adam on mini-batches; returns the last epoch's mean loss."""
    import mlx.optimizers as optim

    def loss_fn(m: Any, xb: Any, yb: Any) -> Any:
        return nn.losses.cross_entropy(m(xb), yb, reduction="mean")

    step = nn.value_and_grad(model, loss_fn)
    opt = optim.Adam(learning_rate=lr)
    rng = np.random.default_rng(seed)
    loss = 0.0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            value, grads = step(model, mx.array(x[idx]), mx.array(y[idx]))
            opt.update(model, grads)
            mx.eval(model.parameters(), opt.state, value)
            losses.append(value.item())
        loss = float(np.mean(losses))
    return loss


def median_seconds(fn: Callable[[], Any], *, budget: float = 0.5, max_reps: int = 200) -> float:
    """Median wall time of ``fn`` after a warm-up, within a time budget."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < 5 or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class DemoResult:
    """What the demo measured."""

    output_dir: Path
    train_seconds: float
    loss: float
    mlx_accuracy: float
    onnx_accuracy: float
    agree: int
    n_test: int
    files: list[Path]
    report: Any
    mlxfn_report: Any
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (1 sample, batch 64)

    def __str__(self) -> str:
        lines = [f"Trained the 784-256-10 MLP on scikit-learn digits in {self.train_seconds:.1f} s "
                 f"(last epoch loss {self.loss:.3f}).", "",
                 str(self.report), "", str(self.mlxfn_report), "",
                 f"Test accuracy on {self.n_test} held-out digits:",
                 f"  MLX:          {self.mlx_accuracy:.2%}",
                 f"  ONNX Runtime: {self.onnx_accuracy:.2%}  (same prediction for {self.agree}/{self.n_test})",
                 "", "Inference time (median):", f"  {'':14}{'1 sample':>12}{'batch 64':>12}"]
        for name, (single, batch) in self.timings.items():
            lines.append(f"  {name:14}{_fmt_time(single):>12}{_fmt_time(batch):>12}")
        if sys.platform.startswith("linux"):
            lines.append("  Note: stock mlx-cpu on Linux uses a slow reference BLAS, so MLX's numbers here are "
                         "far from MLX on Apple silicon (or with OpenBLAS preloaded).")
        lines += ["", f"Files in {self.output_dir}:"]
        lines += [f"  {p.name}" for p in self.files]
        lines += ["", f"Next: mlxport inspect {self.output_dir / 'mlp.onnx'}"]
        return "\n".join(lines)


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def run_demo(output_dir: str | Path = "mlxport-demo", *, epochs: int = 10, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> DemoResult:
    """Train, export to ONNX (dynamic batch) and .mlxfn, validate, compare accuracy and time both runtimes.

    Args:
        output_dir: where mlp.onnx, mlp.mlxfn and their metadata files go.
        epochs: training epochs over the 1,437 training digits (~0.5 s each on 2 cores).
        seed: seed of the weights, the data split and the batch order.
        progress: called with a message at each stage.

    Returns:
        A DemoResult; ``str()`` of it is the printed summary.
    """
    from .api import export
    from .runners import load

    say = progress or (lambda _msg: None)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    say("loading scikit-learn digits (upscaled to 28x28)")
    x_train, y_train, x_test, y_test = load_digits_784(seed)
    mx.random.seed(seed)
    model = MLP()
    mx.eval(model.parameters())
    say(f"training the MLP for {epochs} epochs on {len(x_train)} digits")
    t0 = time.perf_counter()
    loss = train(model, x_train, y_train, epochs=epochs, seed=seed)
    train_seconds = time.perf_counter() - t0
    model.eval()
    mlx_logits = np.array(model(mx.array(x_test)))
    mlx_pred = mlx_logits.argmax(axis=1)

    say("exporting to ONNX with a dynamic batch axis")
    onnx_path = out / "mlp.onnx"
    report = export(model, (x_test[:1],), onnx_path, dynamic_axes={"x": {0: "batch"}}, output_names=["logits"],
                    progress=say)
    # MLX's shapeless export computes wrong rows for Linear beyond the example batch
    # (mlxport's validation catches it), so the .mlxfn keeps a fixed batch of 1.
    say("exporting to .mlxfn (batch 1)")
    mlxfn_report = export(model, (x_test[:1],), out / "mlp.mlxfn", output_names=["logits"], progress=say)

    say(f"running the ONNX model on the {len(x_test)} test digits with ONNX Runtime")
    runner = load(onnx_path)
    onnx_pred = runner(x_test)[0].argmax(axis=1)

    say("timing MLX and ONNX Runtime")
    session = runner.session
    timings = {}
    one, batch = x_test[:1], x_test[:64]
    one_mx, batch_mx = mx.array(one), mx.array(batch)
    timings["MLX"] = (median_seconds(lambda: mx.eval(model(one_mx))),
                      median_seconds(lambda: mx.eval(model(batch_mx))))
    name = runner.inputs[0].name
    timings["ONNX Runtime"] = (median_seconds(lambda: session.run(None, {name: one})),
                               median_seconds(lambda: session.run(None, {name: batch})))
    files = sorted(p for p in out.iterdir() if p.is_file())
    return DemoResult(out, train_seconds, loss, float((mlx_pred == y_test).mean()),
                      float((onnx_pred == y_test).mean()), int((onnx_pred == mlx_pred).sum()), len(x_test),
                      files, report, mlxfn_report, timings)


__all__ = ["MLP", "DemoResult", "MissingDependencyError", "load_digits_784", "run_demo"]

"""Learning curves: loss and accuracy per epoch, drawn with matplotlib into an image file."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from netc.compiler.errors import NetcError
from netc.compiler.files import write_file


def plot_history(history, path) -> None:
    """Draw `history` (fit's History) into `path`; the format follows the extension (.png, .svg, .pdf)."""
    # The object-oriented API with the Agg canvas: no window, no global pyplot state, works without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not len(history):
        raise NetcError("no epoch has finished yet, so there are no curves to plot")
    panels = [("loss", "loss")]
    if any(value is not None for value in history["accuracy"] + history["val_accuracy"]):
        panels.append(("accuracy", "accuracy"))
    figure = Figure(figsize=(5 * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    epochs = history["epoch"]
    for column, (key, title) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), column + 1)
        for name, label in ((key, "training"), ("val_" + key, "validation")):
            values = history[name]
            if any(value is not None for value in values):
                axes.plot(epochs, values, marker="o", markersize=3, label=label)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
    drawing = BytesIO()
    try:
        figure.savefig(drawing, format=Path(path).suffix.lstrip(".").lower() or None)
    except (ValueError, OSError) as err:
        raise NetcError(f"cannot write the plot {path}: {err}") from None
    write_file(path, drawing.getvalue())

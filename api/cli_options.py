"""Options that several `netc` commands take alike, declared once."""

from __future__ import annotations

from netc.compiler.dtypes import PRECISIONS


def add_precision_argument(parser) -> None:
    """--precision, as every command that compiles a step takes it (checked against the backend where the
    step is compiled: runtime/model.py's check_precision)."""
    parser.add_argument(
        "--precision", default="float32", choices=list(PRECISIONS),
        help="float32 (default), float64, tf32 (cuda only: TensorFloat-32 matmuls, as torch's allow_tf32) or "
        "bf16 (mixed precision as torch.autocast(dtype=torch.bfloat16): bfloat16 matmuls and the activations "
        "between them, float32 weights and optimiser state; emulated on the cpu backend)",
    )

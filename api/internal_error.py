"""What an unexpected exception becomes on the command line: an internal compiler error report, no traceback.

Every mistake of the user's is a NetcError (exit 2). Anything else that escapes a command is a bug in netc;
the user gets a report that says so, names the network and the stage of the compiler that failed (from the
innermost netc frame of the traceback), suggests the reference backend (which runs the IR one primitive at a
time, skipping fusion, planning and code generation), and asks for the `.net` file in a bug report:

    netc: internal compiler error in fusion (netc.compiler.passes.fuse) while compiling network LeNet from
    examples/lenet.net: KeyError: 42
    ...

NETC_DEBUG=1 adds the traceback.
"""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path

EXIT_INTERNAL_ERROR = 3

# Module prefix -> the stage it belongs to; the longest prefix that matches wins.
STAGES = {
    "netc.compiler.parse": "parsing",
    "netc.compiler.syntax_errors": "parsing",
    "netc.compiler.frontend": "loading",
    "netc.compiler": "lowering to IR (shape checking)",
    "netc.compiler.ir": "IR verification",
    "netc.compiler.autodiff": "differentiation",
    "netc.compiler.passes.simplify": "simplification",
    "netc.compiler.passes.remat": "rematerialisation",
    "netc.compiler.passes.fuse": "fusion",
    "netc.compiler.passes.partition": "fusion",
    "netc.compiler.passes.join_rules": "fusion",
    "netc.compiler.passes.floating": "fusion",
    "netc.compiler.passes.matmul_operands": "fusion",
    "netc.compiler.passes.kernel": "fusion",
    "netc.compiler.passes.kernel_runs": "fusion",
    "netc.compiler.passes.views": "fusion",
    "netc.compiler.passes.copies": "fusion",
    "netc.compiler.passes.autocast": "mixed precision (autocast)",
    "netc.compiler.passes.whole_batch": "convolutions as one GEMM over the whole batch",
    "netc.compiler.passes.pieces": "memory planning",
    "netc.compiler.passes.occupancy": "memory planning",
    "netc.compiler.passes.gemm_tasks": "memory planning",
    "netc.compiler.passes.scratch": "memory planning",
    "netc.compiler.passes.memory": "memory planning",
    "netc.compiler.codegen": "code generation",
    "netc.compiler.passes.arena": "memory planning",
    "netc.compiler.passes.state_slots": "memory planning",
    "netc.runtime.cache": "C compilation",
    "netc.runtime.cpu": "the cpu backend",
    "netc.runtime.cuda": "the cuda backend",
    "netc.runtime.reference": "the reference backend",
    "netc.compiler.optim": "the optimiser's update",
    "netc.runtime": "the runtime",
    "netc": "the command line",
}


def failing_stage(error: BaseException) -> tuple[str, str]:
    """(stage, module) of the innermost netc frame the exception passed through."""
    module = "netc"
    frame = error.__traceback__
    while frame is not None:
        name = frame.tb_frame.f_globals.get("__name__", "")
        if name == "netc" or name.startswith("netc."):
            module = name
        frame = frame.tb_next
    prefix = max((p for p in STAGES if module == p or module.startswith(p + ".")), key=len, default="netc")
    return STAGES[prefix], module


def network_name(file, network: str | None) -> str:
    """The network the command was compiling: --network, else the names the file defines."""
    if network:
        return network
    try:
        text = Path(file).read_text(encoding="utf-8", errors="replace")
    except (OSError, TypeError, ValueError):
        return "?"
    names = re.findall(r"^\s*network\s+([A-Za-z_]\w*)", text, re.MULTILINE)
    return ", ".join(names) if names else "?"


def report_internal_error(error: BaseException, file, network: str | None) -> str:
    stage, module = failing_stage(error)
    problem = f"{type(error).__name__}: {error}"
    lines = [
        f"netc: internal compiler error in {stage} ({module}) while compiling network "
        f"{network_name(file, network)} from {file}: {problem}",
        "    This is a bug in netc, not a mistake in your network.",
        "    hint: the reference backend may still run it: add --backend reference",
        "    Please file a bug report with the .net file (and the files it imports) and this message.",
    ]
    if os.environ.get("NETC_DEBUG"):
        lines.append("".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip())
    else:
        lines.append("    (NETC_DEBUG=1 shows the traceback)")
    return "\n".join(lines)

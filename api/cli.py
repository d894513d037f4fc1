"""The `netc` command line: check, inspect, run and train `.net` files (training: cli_train.py; sampling text:
cli_sample.py).

A mistake in the user's file prints a compiler-style message (file:line:col, the line, a caret) and exits 2.
Any other exception is a bug in netc: it prints an internal compiler error report (internal_error.py) and
exits 3. No traceback reaches the user either way (NETC_DEBUG=1 shows it).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import netc
import numpy as np
from netc.cli_options import add_precision_argument
from netc.cli_sample import add_command as add_sample_command
from netc.cli_train import EXIT_INTERRUPTED
from netc.cli_train import add_commands as add_training_commands
from netc.compiler.errors import InternalError, NetcError, NetcWarning
from netc.compiler.files import write_file
from netc.compiler.passes.simplify import count_values
from netc.compiler.pipeline import STAGE_NAMES, StepSpec, run_graph_stages
from netc.internal_error import EXIT_INTERNAL_ERROR, report_internal_error
from netc.runtime.backends import AUTO_HELP
from netc.runtime.parameters import to_numpy

EXIT_USER_ERROR = 2
RENDERED_FORMATS = ("svg", "png", "pdf")  # drawn by Graphviz's dot program


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: `netc train --nproc` passes it on
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        warnings.simplefilter("always", NetcWarning)  # each rebuilt cache entry is news, not a repeat
        try:
            return args.handler(args) or 0
        except InternalError as err:  # a bug caught where the API promises a NetcError
            print(report_internal_error(err.__cause__ or err, args.file, args.network), file=sys.stderr)
            return EXIT_INTERNAL_ERROR
        except NetcError as err:
            print(str(err), file=sys.stderr)
            return EXIT_USER_ERROR
        except BrokenPipeError:  # `netc ir big.net | head` is fine
            return 0
        except KeyboardInterrupt:  # Ctrl-C outside a training loop (which saves first): no traceback
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except MemoryError:
            print("error: out of memory", file=sys.stderr)
            print("    hint: use a smaller batch size or smaller layers", file=sys.stderr)
            return EXIT_USER_ERROR
        except Exception as err:  # a bug in netc: a report, not a traceback
            print(report_internal_error(err, args.file, args.network), file=sys.stderr)
            return EXIT_INTERNAL_ERROR


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """netc's own warnings as one line, like its errors; others as Python prints them."""
    if issubclass(category, NetcWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def dim_binding(text: str) -> tuple:
    """`--dim T=64` as ("T", 64)."""
    name, _, size = text.partition("=")
    if not name.isidentifier() or not size.isdigit() or int(size) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=SIZE with a positive size, such as T=64; got {text!r}")
    return name, int(size)


def dims_of(args) -> dict | None:
    """The --dim bindings by name (None when there are none); a name given twice is an error."""
    dims = {}
    for name, size in args.dim:
        if dims.get(name, size) != size:
            raise NetcError(f"--dim {name} is given twice, as {dims[name]} and {size}")
        dims[name] = size
    return dims or None


def load_network(args):
    """The network of args.file, with the --dim sizes bound."""
    return netc.load(args.file, args.network, import_path=args.import_path, dims=dims_of(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netc", description="Compile neural networks written in .net files."
    )
    parser.add_argument("--version", action="version", version=f"netc {netc.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("file", type=Path, help="the .net file")
        sub.add_argument("--network", help="which network of the file, if it defines several")
        sub.add_argument(
            "--import-path",
            action="append",
            type=Path,
            metavar="DIR",
            help="a folder `import` may read from besides the file's own folder tree (repeatable; also "
            "$NETC_PATH)",
        )
        sub.add_argument(
            "--dim",
            action="append",
            type=dim_binding,
            default=[],
            metavar="NAME=SIZE",
            help="the size of a symbol other than the batch size, such as T=64 (repeatable)",
        )
        sub.set_defaults(handler=handler)
        return sub

    command("check", cmd_check, "parse and shape-check a network; print its layers and parameter counts")
    ir = command(
        "ir", cmd_ir, "print a stage of the network's compilation: its IR, kernels, arena plan or source"
    )
    ir.add_argument(
        "--stage", default="lowered", choices=STAGE_NAMES, metavar="STAGE",
        help="which stage's result to print (lowered; see --list-stages)",
    )
    ir.add_argument("--list-stages", action="store_true", help="list the stages, in order, and exit")
    ir.add_argument(
        "--step", choices=("forward", "gradients", "train"),
        help="which step: the forward pass, the gradients, or a training step (with SGD, momentum 0.9) - "
        "by default train when the network minimises a loss, else forward",
    )
    ir.add_argument("--batch", type=int, help="bind the batch size (symbolic sizes stay symbolic without it)")
    ir.add_argument(
        "--eval", action="store_true", help="the eval-mode graph (BatchNorm running stats, no dropout)"
    )
    add_precision_argument(ir)
    ir.add_argument(
        "--backend", choices=("cpu", "cuda"), default="cpu",
        help="whose kernels, plan and source the later stages show (cuda needs no GPU)",
    )
    ir.add_argument(
        "--grad", action="store_true", help="short for --step gradients --stage rematerialised"
    )
    graph = command("graph", cmd_graph, "draw the network's data flow")
    graph.add_argument(
        "--format",
        choices=("text", "dot") + RENDERED_FORMATS,
        default="text",
        help="text chains, Graphviz source, or a drawing (svg, png, pdf: needs Graphviz's dot program)",
    )
    graph.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    graph.add_argument(
        "--backward", action="store_true", help="the backward pass, layer by layer (like .grad_fn)"
    )
    build = command(
        "compile", cmd_compile, "compile for the CPU or a GPU and write every stage: IR, kernels, C or CUDA, "
        "plan, report"
    )
    build.add_argument("--batch", type=int, required=True)
    build.add_argument(
        "--backend", choices=("cpu", "cuda"), default="cpu", help="cpu (C) or cuda (CUDA, compiled without a GPU)"
    )
    build.add_argument("-o", "--output", type=Path, required=True, help="the folder to write into")
    add_precision_argument(build)
    export = command(
        "export", cmd_export, "write a standalone C (or CUDA) library of the network: inference and training "
        "steps, weights, Makefile, demo"
    )
    export.add_argument("--batch", type=int, required=True, help="the batch size the library is compiled for")
    export.add_argument("-o", "--output", type=Path, required=True, help="the folder to write into")
    export.add_argument("--weights", type=Path, help="the weights to ship (a checkpoint or a state dict); "
                        "default: the initial ones")
    export.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="sgd (default), adam or adamw")
    export.add_argument("--lr", type=float, help="learning rate (0.01 for sgd, 0.001 for adam and adamw)")
    export.add_argument("--momentum", type=float, help="sgd's momentum (0)")
    export.add_argument(
        "--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"), help="adam's and adamw's (0.9 0.999)"
    )
    export.add_argument("--weight-decay", type=float, help="L2 penalty; adamw's decoupled decay (0, adamw 0.01)")
    export.add_argument("--target", choices=("c", "cuda"), default="c", help="c (CPU, the default) or cuda")
    run = command("run", cmd_run, "run the network forward on random inputs and print what comes out")
    run.add_argument("--batch", type=int, default=4)
    run.add_argument("--backend", default="auto", help=AUTO_HELP + "reference, cpu or cuda")
    run.add_argument("--seed", type=int, default=0, help="initial weights and inputs (0)")
    add_precision_argument(run)
    add_training_commands(command)
    add_sample_command(command)
    return parser


def cmd_check(args) -> None:
    net = load_network(args)
    print(
        f"{args.file}: network {net.name} checks out"
        + (f" (symbolic: {', '.join(net.symbols)})" if net.symbols else "")
    )
    from netc.compiler.summary import layer_table

    print(layer_table(net.graph))


def cmd_ir(args) -> None:
    from netc.compiler.pipeline import STAGES, compile_network_step, stage_index

    if args.list_stages:
        for stage in STAGES:
            print(f"{stage.name:<15} {stage.makes}")
        return
    net = load_network(args)
    stage, kind = args.stage, args.step
    symbolic = bool(net.symbols) and args.batch is None
    if args.grad:
        kind = kind or "gradients"
        if stage == "lowered":  # rematerialising weighs sizes: with symbolic ones, the graph before it
            stage = "simplified" if symbolic else "rematerialised"
    kind = kind or ("train" if net.graph.loss is not None else "forward")
    bindings = {} if args.batch is None else netc.bindings_for(net, args.batch)
    if symbolic and stage_index(stage) >= stage_index("rematerialised"):
        raise NetcError(f"the {stage} stage needs concrete sizes: add --batch N")
    optimizer = netc.optim.SGD(lr=0.01, momentum=0.9) if kind == "train" else None
    backend = _codegen_backend(args.backend)
    spec = StepSpec(kind, training=not args.eval, optimizer=optimizer)
    step = compile_network_step(net, bindings, spec, backend, args.precision, until=stage)
    print(step.show(stage))
    if stage in ("simplified", "rematerialised") and "simplified" not in step.skipped:
        before = count_values(step["updated"])
        after = count_values(step["simplified"])
        print(f"# {before} values before simplification, {after} after (dead code, common subexpressions, "
              f"constants and identities removed)")


def _codegen_backend(name: str):
    """The backend whose stages `netc ir` shows, up to rendering: no GPU needed for cuda."""
    if name == "cuda":
        from netc.runtime.cuda import CudaCodegen

        return CudaCodegen()
    from netc.runtime.cpu import CpuBackend

    return CpuBackend(profile=False)


def cmd_graph(args) -> None:
    from netc.compiler.summary import backward_chain, dot_graph, text_graph

    net = load_network(args)
    if args.backward:
        if args.format != "text":
            raise NetcError(f"--backward draws text only; drop --format {args.format}")
        text = backward_chain(run_graph_stages(net.graph, StepSpec("gradients"), until="simplified"))
    elif args.format in RENDERED_FORMATS:
        write_drawing(dot_graph(net.graph), args.format, args.output)
        return
    else:
        text = dot_graph(net.graph) if args.format == "dot" else text_graph(net.graph)
    if args.output:
        write_file(args.output, text + "\n")
    else:
        print(text)


def write_drawing(source: str, format: str, output: Path | None) -> None:
    """Render Graphviz source with the dot program into `output` (an svg may go to standard output)."""
    import graphviz

    if output is None and format != "svg":
        raise NetcError(f"--format {format} writes a binary file; name it with -o net.{format}")
    try:
        drawing = graphviz.Source(source).pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise NetcError(
            f"drawing {format} needs Graphviz's `dot` program, which is not on the PATH",
            hint="install Graphviz (apt-get install graphviz, brew install graphviz, or "
            "graphviz.org/download), or write the source with --format dot",
        ) from None
    except graphviz.CalledProcessError as err:
        raise NetcError(f"Graphviz could not draw the graph: {err.stderr.decode(errors='replace')}") from None
    if output is None:
        print(drawing.decode())
    else:
        write_file(output, drawing)


def cmd_compile(args) -> None:
    from netc.runtime.export import export_compiled

    net = load_network(args)
    bindings = netc.bindings_for(net, args.batch)
    for path in export_compiled(net, bindings, args.output, args.precision, backend=args.backend):
        print(path)
    print((args.output / f"{net.name.lower()}.report.txt").read_text().split("\n\n")[1].splitlines()[0])


def cmd_export(args) -> None:
    from netc.cli_train import optimizer_from_args
    from netc.runtime.export_library import export_library

    net = load_network(args)
    optimizer = optimizer_from_args(args, None) or netc.optim.SGD(lr=0.01)
    export_library(net, netc.bindings_for(net, args.batch), args.output, optimizer, args.weights, args.target)
    print(f"wrote {args.output}/: build it with `make -C {args.output}`, then run {args.output}/demo")


def cmd_run(args) -> None:
    model = netc.compile(
        args.file, batch=args.batch, backend=args.backend, seed=args.seed, network=args.network,
        import_path=args.import_path, dims=dims_of(args), precision=args.precision,
    )
    rng = np.random.default_rng(args.seed)
    inputs = {name: random_input(model.graph.inputs[name], rng) for name in model.input_names()}
    outputs = {name: to_numpy(array) for name, array in model.forward(**inputs).items()}  # cuda: CuPy arrays
    print(f"{model.network.name} on the {model.backend.name} backend, batch {args.batch}, random inputs:")
    for name, array in outputs.items():
        summary = (
            f"{array.item():.6g}" if array.ndim == 0 else f"mean {array.mean():+.4f}  std {array.std():.4f}"
        )
        print(f"  {name}: {list(array.shape)} {array.dtype}  {summary}")


def random_input(leaf, rng) -> np.ndarray:
    """Random data for an input: standard normal floats, or labels in a plausible range."""
    if leaf.dtype == "i64":
        return rng.integers(0, 2, size=leaf.shape)  # valid labels for any classifier with two or more classes
    return rng.standard_normal(leaf.shape).astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())

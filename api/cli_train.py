"""`netc train`, `netc eval` and `netc predict`: the training workflow on `.npz` data, from the command line.

    netc train net.net --data train.npz --val-split 0.1 --epochs 20 --checkpoint run.safetensors --plot a.png
    netc eval net.net --weights run.safetensors --data test.npz
    netc predict net.net --weights run.safetensors --data images.npz -o predictions.npz

Data-parallel training: `netc train --nproc K ...` starts K ranks on this machine (launch.py), and
`torchrun --nproc-per-node K -m netc train ...` (one machine or several) starts each rank itself; a rank finds
the others through the environment torchrun sets. --batch-size is then per rank.

Ctrl-C during training saves a checkpoint (to --checkpoint, or NAME.interrupted.safetensors) and exits with
status 130, as a shell expects of an interrupted program; `--resume` continues from it. SIGTERM and SIGHUP
(a scheduler, `docker stop`, a closed terminal) do the same, with status 143 and 129. Every path a command
writes is checked before it starts, not after an hour of training.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from io import BytesIO
from pathlib import Path

import netc
import numpy as np
from netc.cli_options import add_precision_argument
from netc.compiler import ast
from netc.compiler.errors import NetcError
from netc.compiler.files import check_output_path, write_file
from netc.runtime.backends import AUTO_HELP
from netc.runtime.checkpoint import check_checkpoint_path, load_checkpoint, save_checkpoint
from netc.runtime.distributed import DEFAULT_TIMEOUT, in_distributed_environment, leave_world
from netc.runtime.fit import TrainingInterrupted, resumed_batch_size

EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell expects of a program a signal stopped: 128 + its number
PLOT_FORMATS = (".png", ".svg", ".pdf")
OPTIMIZERS = {"sgd": netc.optim.SGD, "adam": netc.optim.Adam, "adamw": netc.optim.AdamW}
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3}


def add_commands(command) -> None:
    """Register the commands through cli.build_parser's `command(name, handler, help)`."""
    train = command(
        "train", cmd_train, "train the network on a .npz file whose arrays are named as its inputs"
    )
    train.add_argument("--data", type=Path, required=True, help="the training data (.npz)")
    train.add_argument("--epochs", type=int, default=10, help="epochs in all, counting resumed ones (10)")
    train.add_argument(
        "--batch-size", type=int, help="samples per step, on each rank (32, or as many as the resumed run took)"
    )
    train.add_argument(
        "--max-steps", type=int, help="stop after this many steps in all, within an epoch if need be"
    )
    train.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="sgd (default), adam or adamw")
    train.add_argument("--lr", type=float, help="learning rate (0.01 for sgd, 0.001 for adam and adamw)")
    train.add_argument("--momentum", type=float, help="sgd's momentum (0)")
    train.add_argument(
        "--weight-decay", type=float, help="L2 penalty; adamw's decoupled decay (0, adamw 0.01)"
    )
    train.add_argument(
        "--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"), help="adam's and adamw's (0.9 0.999)"
    )
    train.add_argument(
        "--lr-schedule",
        choices=("cosine",),
        help="cosine: a linear warm-up over --warmup-steps, then a cosine decay to --min-lr at the last step",
    )
    train.add_argument("--warmup-steps", type=int, help="steps of linear warm-up for --lr-schedule cosine (0)")
    train.add_argument("--min-lr", type=float, help="the lr --lr-schedule cosine ends at (0)")
    train.add_argument("--seed", type=int, help="initial weights, batch order and validation split (0)")
    train.add_argument("--backend", default="auto", help=AUTO_HELP + "reference (NumPy), cpu (C) or cuda")
    add_precision_argument(train)
    validation = train.add_mutually_exclusive_group()
    validation.add_argument("--val", type=Path, help="validation data (.npz)")
    validation.add_argument("--val-split", type=float, help="hold out this fraction of --data for validation")
    train.add_argument(
        "--checkpoint", type=Path, help="save a checkpoint here after every epoch (.safetensors)"
    )
    train.add_argument(
        "--resume", type=Path, help="continue from this checkpoint (and save there, unless --checkpoint)"
    )
    train.add_argument("--weights", type=Path, help="start from these weights (a checkpoint or a state dict)")
    train.add_argument("--plot", type=Path, help="draw loss and accuracy per epoch into this image")
    train.add_argument("--quiet", action="store_true", help="no progress bar and no line per epoch")
    ranks = train.add_argument_group("data-parallel training (torch.distributed; under torchrun without --nproc)")
    ranks.add_argument("--nproc", type=int, help="train on this many local processes, each on its share")
    ranks.add_argument(
        "--drop-last", action="store_true",
        help="drop the end of each epoch's order that does not divide among the ranks (default: pad it)",
    )
    ranks.add_argument(
        "--sync-batchnorm", action="store_true",
        help="BatchNorm's training statistics over all the ranks' batches together (torch's SyncBatchNorm)",
    )
    ranks.add_argument(
        "--dist-timeout", type=float, default=DEFAULT_TIMEOUT,
        help=f"seconds a rank waits for the others before giving the run up ({DEFAULT_TIMEOUT:g})",
    )

    for name, handler, help in (
        ("eval", cmd_eval, "report the loss and accuracy of trained weights on a .npz file"),
        ("predict", cmd_predict, "run trained weights on a .npz file and write every output to another"),
    ):
        sub = command(name, handler, help)
        sub.add_argument(
            "--weights", type=Path, required=True, help="a checkpoint or a safetensors state dict"
        )
        sub.add_argument("--data", type=Path, required=True, help="the inputs (.npz), named as the network's")
        sub.add_argument("--batch-size", type=int, default=256, help="samples per forward pass (256)")
        sub.add_argument("--backend", default="auto", help=AUTO_HELP + "reference (NumPy), cpu (C) or cuda")
        add_precision_argument(sub)
        if name == "predict":
            sub.add_argument(
                "-o", "--output", type=Path, required=True, help="where to write the outputs (.npz)"
            )


def cmd_train(args) -> int:
    if args.resume and args.weights:
        raise NetcError("--resume already restores the weights; drop --weights")
    check_paths(args)
    if args.nproc is not None:
        if in_distributed_environment():
            raise NetcError("--nproc starts the ranks itself; under torchrun, leave it out")
        from netc.launch import launch_ranks, without_nproc

        return launch_ranks(without_nproc(args.argv), args.nproc, grace=min(args.dist_timeout, 30.0))
    distributed = in_distributed_environment()
    try:
        return train_rank(args, distributed)
    finally:
        if distributed:
            leave_world()


def train_rank(args, distributed: bool) -> int:
    """Train in this process: the whole run, or one rank's part of it."""
    main_rank = not distributed or os.environ.get("RANK", "0") == "0"
    resumed = load_checkpoint(args.resume, tensors=False) if args.resume else None  # fit reads the tensors
    training = resumed.training if resumed is not None else {}
    ranks = int(os.environ.get("WORLD_SIZE", "1")) if distributed else 1
    batch_size = args.batch_size if args.batch_size is not None else resumed_batch_size(training, ranks) or 32
    seed = args.seed if args.seed is not None else training.get("seed", 0)
    model = compile_model(args, batch_size, seed)
    if args.weights:
        model.load_state_dict(load_checkpoint(args.weights, shapes_of(model)).model)
    try:
        history = netc.fit(
            model,
            args.data,
            epochs=args.epochs,
            batch_size=batch_size,
            optimizer=optimizer_from_args(args, resumed),
            val_data=args.val,
            val_split=args.val_split,
            seed=seed,
            checkpoint=args.checkpoint or args.resume,  # a resumed run goes on saving where it came from
            resume=args.resume,
            progress=not args.quiet,
            lr_scheduler=schedule_from_args(args),
            distributed=distributed,
            drop_last=args.drop_last,
            dist_timeout=args.dist_timeout,
            max_steps=args.max_steps,
            sync_batchnorm=args.sync_batchnorm,
        )
    except TrainingInterrupted as stop:
        if not main_rank:
            return 128 + stop.signal
        path = stop.path or interrupted_path(args)
        if stop.path is None:
            save_checkpoint(path, stop.checkpoint)
        position = stop.checkpoint.training["batch"]
        by = "" if stop.signal == signal.SIGINT else f" by {signal.Signals(stop.signal).name}"
        print(
            f"interrupted{by} in epoch {stop.checkpoint.epoch + 1} after {position} steps; saved {path}\n"
            f"continue with: "
            f"netc train {args.file} --data {args.data} --epochs {args.epochs} --resume {path}",
            file=sys.stderr,
        )
        write_plot(args, stop.history)
        return 128 + stop.signal
    if not main_rank:
        return 0
    if args.checkpoint or args.resume:
        print(f"saved {args.checkpoint or args.resume}")
    write_plot(args, history)
    return 0


def check_paths(args) -> None:
    """Everything train will write, checked before it trains: a mistyped path fails now, not after the
    last epoch, and --checkpoint never names a file that is not a checkpoint (the .net file, the data)."""
    if args.checkpoint:
        check_checkpoint_path(args.checkpoint)
    elif not args.resume:
        check_checkpoint_path(interrupted_path(args))
    if args.plot:
        check_output_path(args.plot)
        if args.plot.suffix.lower() not in PLOT_FORMATS:
            raise NetcError(f"--plot {args.plot}: draw into a {', '.join(PLOT_FORMATS)} file")


def interrupted_path(args) -> Path:
    """Where an interrupted run without --checkpoint saves its state."""
    return Path(f"{Path(args.file).stem}.interrupted.safetensors")


def compile_model(args, batch_size: int, seed: int = 0):
    return netc.compile(
        args.file, batch=batch_size, backend=args.backend, seed=seed, network=args.network,
        import_path=args.import_path, dims=data_dims(args), precision=args.precision,
    )


def data_dims(args) -> dict | None:
    """The sizes of the symbols other than the batch size: from the data's arrays (an input `idx: i64[N, T]`
    and an array idx of shape [n, 64] give T = 64), then --dim, which adds and overrides."""
    from netc.cli import dims_of
    from netc.compiler.parse import parse_file
    from netc.runtime.data import declared_shapes

    shapes = declared_shapes(args.data)
    definitions = [d for d in parse_file(args.file).definitions if d.kind == "network"]
    chosen = [d for d in definitions if args.network in (None, d.name)]
    dims, sources = {}, {}
    for decl in (s for s in chosen[0].body if isinstance(s, ast.InputDecl)) if len(chosen) == 1 else ():
        shape = shapes.get(decl.name)
        for axis, dim in enumerate(decl.dims or ()):
            if axis == 0 or not isinstance(dim, ast.Name) or shape is None or axis >= len(shape):
                continue  # the batch axis, a size written out, or data that fit checks later
            if dims.get(dim.id, shape[axis]) != shape[axis]:
                raise NetcError(
                    f"{args.data}: the arrays give {dim.id} two sizes: {dims[dim.id]} ({sources[dim.id]}) and "
                    f"{shape[axis]} ({decl.name})"
                )
            dims[dim.id], sources[dim.id] = int(shape[axis]), decl.name
    dims.update(dims_of(args) or {})
    return dims or None


def shapes_of(model) -> dict:
    return {name: spec.type.shape for name, spec in model.graph.specs.items()}


def optimizer_from_args(args, resumed):
    """The optimiser the flags ask for, on top of the resumed checkpoint's settings; None when neither says
    anything (fit then takes the checkpoint's, or its default)."""
    given = {
        key: value
        for key, value in (
            ("lr", args.lr), ("momentum", args.momentum), ("weight_decay", args.weight_decay),
            ("betas", tuple(args.betas) if args.betas else None),
        )
        if value is not None
    }
    saved = resumed.make_optimizer() if resumed is not None and resumed.optimizer is not None else None
    if args.optimizer is None and not given and saved is None:
        return None
    saved_name = type(saved).__name__.lower() if saved is not None else None
    name = args.optimizer or saved_name or "sgd"
    if saved is not None and name != saved_name:
        raise NetcError(f"{args.resume} was trained with {saved_name}; --optimizer {name} cannot continue it")
    if "momentum" in given and name != "sgd":
        raise NetcError(f"--momentum is an sgd setting; {name} takes --lr, --betas and --weight-decay")
    if "betas" in given and name == "sgd":
        raise NetcError("--betas is an adam and adamw setting; sgd takes --momentum")
    settings = dataclasses.asdict(saved) if saved is not None else {"lr": DEFAULT_LR[name]}
    return OPTIMIZERS[name](**{**settings, **given})


def schedule_from_args(args):
    """The learning-rate schedule the flags ask for: None (a constant lr, or a resumed run's schedule), or
    a function of the run's total step count making nanoGPT's warm-up and cosine decay."""
    from netc.compiler.lr_scheduler import warmup_cosine

    if args.lr_schedule != "cosine":
        for flag, value in (("--warmup-steps", args.warmup_steps), ("--min-lr", args.min_lr)):
            if value is not None:
                raise NetcError(f"{flag} shapes the cosine schedule; add --lr-schedule cosine")
        return None
    warmup, min_lr = args.warmup_steps or 0, args.min_lr or 0.0
    if warmup < 0 or min_lr < 0:
        raise NetcError("--warmup-steps and --min-lr cannot be negative")
    return lambda total_steps: warmup_cosine(warmup, total_steps, min_lr)


def write_plot(args, history) -> None:
    if args.plot and len(history):
        from netc.runtime.plot import plot_history

        plot_history(history, args.plot)
        print(f"plotted {args.plot}")


def cmd_eval(args) -> None:
    model = trained_model(args)
    result = netc.evaluate(model, args.data, batch_size=args.batch_size)
    parts = [f"{model.network.name} on {args.data}, {result['samples']} samples:"]
    if result["loss"] is not None:
        parts.append(f"loss {result['loss']:.4f}")
    if result["accuracy"] is not None:
        parts.append(f"accuracy {result['accuracy']:.2%}")
    print(parts[0], "  ".join(parts[1:]))


def cmd_predict(args) -> None:
    if args.output.suffix != ".npz":
        raise NetcError(f"-o {args.output}: predictions are written as a .npz file; name it something.npz")
    check_output_path(args.output)
    model = trained_model(args)
    outputs = netc.predict(model, args.data, batch_size=args.batch_size)

    buffer = BytesIO()
    np.savez(buffer, **outputs)
    write_file(args.output, buffer.getvalue())
    for name, array in outputs.items():
        print(f"{name}: {list(array.shape)} {array.dtype}")
    print(f"wrote {args.output}")


def trained_model(args):
    """The network compiled for --batch-size, holding --weights, in eval mode."""
    model = compile_model(args, args.batch_size)
    model.load_state_dict(load_checkpoint(args.weights, shapes_of(model)).model)
    return model.eval()

"""The long mode of tests/test_generated.py: many generated networks, every stage on every backend, run in
chunks so that one failure does not end the run.

    python3 benchmarks/fuzz_long.py --examples 2000 [--chunk 100] [--seed 0] [--backends cpu,cuda-emulated]
                                    [--out fuzz-failures]

Each chunk is one Hypothesis run of `--chunk` networks from its own seed. A failing chunk is shrunk by
Hypothesis, its smallest network written to OUT/<seed>.net with the error as a comment, and the run goes on
with the next chunk. A line per chunk says how many networks have been checked; the last line sums up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from netgen.check import BACKENDS, STAGES, check_network
from netgen.strategy import describe, networks


def run_chunk(seed: int, examples: int, backends: tuple) -> tuple[set, object]:
    """The sources of the networks that passed every check, and (smallest failing program, error) or None."""
    checked, failing = set(), {}

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(program=networks())
    def body(program):
        source = program.render()
        try:
            check_network(source, program.batch, STAGES, backends)
        except Exception as error:
            failing["last"] = (program, error)  # the last to fail is the one Hypothesis shrank to
            raise
        checked.add(source)

    try:
        body()
    except Exception:  # noqa: BLE001 - whatever failed, the failing program was recorded
        return checked, failing.get("last")
    return checked, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="networks to check in all")
    parser.add_argument("--chunk", type=int, default=100, help="networks per Hypothesis run")
    parser.add_argument("--seed", type=int, default=0, help="the first chunk's seed")
    parser.add_argument(
        "--backends",
        type=lambda text: tuple(text.split(",")),
        default=BACKENDS,
        help=f"compiled backends to check, comma-separated (default {','.join(BACKENDS)})",
    )
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"), help="where failures are written")
    args = parser.parse_args()
    total, failures, started = 0, [], time.time()
    seed = args.seed
    while total < args.examples:
        checked, failure = run_chunk(seed, min(args.chunk, args.examples - total), args.backends)
        total += len(checked) + (failure is not None)  # passing networks tried while shrinking count too
        if failure is not None:
            program, error = failure
            args.out.mkdir(parents=True, exist_ok=True)
            message = "\n".join("# " + line for line in f"{type(error).__name__}: {error}".splitlines()[:12])
            path = args.out / f"{seed}.net"
            path.write_text(f"{message}\n# batch: {program.batch}\n{describe(program)}")
            failures.append(path)
            print(f"seed {seed}: FAILED, shrunk to {path}: {str(error).splitlines()[0][:160]}", flush=True)
        print(
            f"seed {seed}: {total} networks checked, {len(failures)} failing chunks, "
            f"{time.time() - started:.0f} s",
            flush=True,
        )
        seed += 1
    print(
        f"done: {total} networks checked (every stage: {', '.join(STAGES)}; backends: "
        f"{', '.join(args.backends)}), {len(failures)} failures{': ' if failures else ''}"
        f"{', '.join(map(str, failures))}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

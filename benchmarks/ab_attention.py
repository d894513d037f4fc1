"""A/B of the cpu backend's fused attention kernels (templates/attention*.j2) between this tree and a git revision,
in one process: each tree renders a training step, and the two trees' `attention` and `attention_grad` kernels
are linked into one C program that runs them on a random arena in alternating rounds (before, after, before,
...), so that a shared, noisy machine slows both alike. Prints each kernel's median microseconds either way.

    python3 benchmarks/ab_attention.py --against f6422a9            # the Shakespeare GPT's (batch 12, T = 64)
    python3 benchmarks/ab_attention.py --against f6422a9 --sizes 256 1024   # bench_attention's heads (width 64)
    python3 benchmarks/ab_attention.py --quick                      # HEAD against this tree, few rounds

The GPT's kernels read q, k and v in place from the in-projection's output and store the gradients straight
into its gradient, as in the step; bench_attention's network (batch 2, 4 heads) runs causal and not. Threads:
OMP_NUM_THREADS, as the kernels' own runs take it.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-fopenmp", "-march=native", "-mprefer-vector-width=256"]

DRIVER = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
void fwd_A(char *), bwd_A(char *), fwd_B(char *), bwd_B(char *);
extern const long arena_A, arena_B;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int ascending(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    const int rounds = atoi(argv[1]);
    const long n = arena_A / 4;
    float *a = aligned_alloc(64, n * 4 + 64), *b = aligned_alloc(64, n * 4 + 64);
    srand(1);
    for (long i = 0; i < n; ++i) a[i] = b[i] = (rand() / (float)RAND_MAX - 0.5f) * 4;
    double worst = 0, largest = 0, *t[4];
    fwd_A((char *)a); fwd_B((char *)b); bwd_A((char *)a); bwd_B((char *)b);
    for (long i = 0; i < n; ++i) worst = fmax(worst, fabs(a[i] - b[i])), largest = fmax(largest, fabs(a[i]));
    for (int j = 0; j < 4; ++j) t[j] = malloc(rounds * sizeof(double));
    for (int r = 0; r < rounds; ++r) { /* each first in every other round: whichever runs second finds less in cache */
        void (*fwd[2])(char *) = {fwd_A, fwd_B}, (*bwd[2])(char *) = {bwd_A, bwd_B};
        char *arena[2] = {(char *)a, (char *)b};
        for (int k = 0; k < 2; ++k) {
            const int v = (k + r) % 2;
            double t0 = now(); fwd[v](arena[v]); double t1 = now(); bwd[v](arena[v]); double t2 = now();
            t[v][r] = t1 - t0, t[2 + v][r] = t2 - t1;
        }
    }
    for (int j = 0; j < 4; ++j) qsort(t[j], rounds, sizeof(double), ascending);
    printf("%g %g %g %g %g\n", worst / largest, 1e6 * t[0][rounds / 2], 1e6 * t[1][rounds / 2],
           1e6 * t[2][rounds / 2], 1e6 * t[3][rounds / 2]);
    return 0;
}
"""


def render(config: str, out: str, tag: str) -> None:
    """(In a subprocess whose `netc` is one tree's.) Compile a step, and write its attention kernels to `out` as a
    C unit exporting fwd_TAG(arena), bwd_TAG(arena) and arena_TAG, the arena's bytes."""
    os.environ["NETC_CACHE_DIR"] = cache = tempfile.mkdtemp(prefix="ab_attention_")
    import netc

    if config == "gpt":
        from gpt_setup import gpt_inputs
        from gpt_twin import GPT_NET
        from netc.compiler.optim import AdamW

        netc.compile(GPT_NET, batch=12, backend="cpu").trainer(AdamW(lr=1e-3)).step(**gpt_inputs(12))
    else:
        import bench_attention

        T, causal = (int(x) for x in config.split(","))
        data = bench_attention.arrays(2, 4, T, 64)
        bench_attention.netc_step("cpu", data, 4, T, 64, bool(causal))()
    parts = sorted(glob.glob(f"{cache}/*/*/*.c"))
    text = "".join(Path(p).read_text() for p in parts)
    first = Path(parts[0]).read_text()
    unit = [first[: re.search(r"^/\* \d+: ", first, re.M).start()]]
    for op, name in (("attention", "fwd"), ("attention_grad", "bwd")):
        start = re.search(rf"^(?:SHARED_)?KERNEL (k\d+_{op})\(", text, re.M)
        unit.append(text[start.start() : text.index("\nNETC_HIDDEN void", start.start())])
        call = re.search(rf"NETC_HIDDEN void netc_k\d+\(char \*arena\) \{{ ({start.group(1)}\(.*?\);) \}}", text)
        unit.append(f"\nvoid {name}_{tag}(char *arena) {{ {call.group(1)} }}\n")
    arena = re.search(r"one arena of (\d+) bytes", text).group(1)
    unit.append(f"const long arena_{tag} = {arena};\n")
    Path(out).write_text("".join(unit))


def package_of(tree: Path, into: Path) -> Path:
    """A folder whose `netc` is `tree`'s (pyproject.toml's package-dir, as links), to put first on the path."""
    package = into / "netc"
    package.mkdir(parents=True)
    for entry in (tree / "api").iterdir():
        (package / entry.name).symlink_to(entry)
    for sub in ("compiler", "grammar", "runtime"):
        (package / sub).symlink_to(tree / sub)
    return into


def unit_of(tree: Path, config: str, work: Path, tag: str) -> Path:
    out = work / f"{tag}.c"
    path = [package_of(tree, work / f"path_{tag}"), tree / "tests", tree / "benchmarks"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in path))
    subprocess.run([sys.executable, __file__, "--render", config, str(out), tag], env=env, check=True)
    obj = out.with_suffix(".o")
    subprocess.run(["cc", *FLAGS, "-c", str(out), "-o", str(obj)], check=True)
    return obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="HEAD", help="the git revision before (default: HEAD)")
    parser.add_argument("--sizes", type=int, nargs="*", help="bench_attention's T instead of the GPT")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    parser.add_argument("--render", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        return render(*args.render)
    rounds = 5 if args.quick else args.rounds
    configs = ["gpt"] if not args.sizes else [f"{T},{c}" for T in args.sizes for c in (0, 1)]
    with tempfile.TemporaryDirectory(prefix="ab_attention_") as scratch:
        work, before = Path(scratch), Path(scratch) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        print(f"attention kernels, {args.against} (before) against this tree (after), median microseconds of "
              f"{rounds} alternating rounds, {os.environ.get('OMP_NUM_THREADS', 'all')} threads\n")
        print("| step | kernel | before us | after us | after / before | max rel. diff |")
        print("|---|---|---|---|---|---|")
        for config in configs:
            objects = [unit_of(before, config, work / config, "A"), unit_of(ROOT, config, work / config, "B")]
            program = work / config / "ab"
            driver = work / "driver.c"
            driver.write_text(DRIVER)
            subprocess.run(["cc", *FLAGS, str(driver), *map(str, objects), "-lm", "-o", str(program)], check=True)
            result = subprocess.run([str(program), str(rounds)], capture_output=True, text=True, check=True)
            diff, *micros = (float(x) for x in result.stdout.split())
            name = "GPT (batch 12, T 64)" if config == "gpt" else "T {}, {}".format(
                config.split(",")[0], "causal" if config.endswith("1") else "not causal")
            for kernel, (a, b) in zip(("attention", "attention_grad"), (micros[:2], micros[2:])):
                print(f"| {name} | {kernel} | {a:.0f} | {b:.0f} | {b / a:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()

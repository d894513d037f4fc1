"""`netc compile --backend cuda -o DIR`: the CUDA modules, launch list and plan, written without a GPU as
`--backend cpu` writes C; the modules compile with nvcc where it is installed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from netc.cli import main
from test_cuda_codegen import NVCC, nvcc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_compile_for_cuda_writes_the_modules_launch_list_and_plan(capsys, tmp_path):
    code = main(
        ["compile", str(EXAMPLES / "lenet.net"), "--backend", "cuda", "--batch", "8", "-o", str(tmp_path)]
    )
    assert code == 0, capsys.readouterr().err
    for suffix in ("ir", "grad", "fused", "train.cu", "infer.cu", "plan.json", "report.txt"):
        assert (tmp_path / f"lenet.{suffix}").stat().st_size > 0, suffix
    assert not list(tmp_path.glob("*.c"))
    assert "on the cuda backend" in (tmp_path / "lenet.report.txt").read_text()
    plans = json.loads((tmp_path / "lenet.plan.json").read_text())
    for step in ("train", "infer"):
        source = (tmp_path / f"lenet.{step}.cu").read_text()
        launches = [
            entry["launch"] for entry in plans["train" if step == "train" else "inference"]["launches"]
        ]
        entries = re.findall(r'extern "C" __global__ void (\w+)\(char \*arena\)', source)
        assert entries == [launch["entry"] for launch in launches if "entry" in launch]
        gemms = [launch for launch in launches if "entry" not in launch]
        assert gemms and all(launch["m"] * launch["n"] * launch["k"] > 0 for launch in gemms)
        assert [launch["index"] for launch in launches] == list(range(len(launches)))
    train = plans["train"]
    assert train["peak_live_bytes"] <= train["arena_bytes"] < train["naive_bytes"]
    assert "conv1.weight" in train["updated_in_place"]


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_the_written_cuda_modules_compile_with_nvcc(capsys, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "compile",
                str(EXAMPLES / "lenet.net"),
                "--backend",
                "cuda",
                "--batch",
                "2",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    (module,) = out.glob("*.train.cu")
    nvcc(module.read_text(), tmp_path)


def test_compile_refuses_a_backend_it_cannot_write(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(
            [
                "compile",
                str(EXAMPLES / "lenet.net"),
                "--backend",
                "reference",
                "--batch",
                "2",
                "-o",
                str(tmp_path),
            ]
        )
    assert "invalid choice: 'reference'" in capsys.readouterr().err

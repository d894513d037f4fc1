"""The .net grammar, shipped as package data: compiler/parse.py loads it from GRAMMAR_PATH."""

from pathlib import Path

GRAMMAR_PATH = Path(__file__).resolve().parent / "net.lark"

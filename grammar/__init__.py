"""The .net grammar, shipped as package data."""

from pathlib import Path

GRAMMAR_PATH = Path(__file__).resolve().parent / "net.lark"

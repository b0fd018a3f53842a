"""The examples in the docstrings and in the README's Python section run and give what they show."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import eosdetect

ROOT = Path(__file__).resolve().parent.parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
#: Every module of the package (the optional web service's too: the tests install FastAPI).
MODULES = sorted(m.name for m in pkgutil.walk_packages(eosdetect.__path__, "eosdetect.") if m.name != "eosdetect.__main__")


def test_every_module_is_found():
    assert {"eosdetect.core.tiling", "eosdetect.models.model", "eosdetect.apps.cli"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS, extraglobs={"np": __import__("numpy")})
    assert result.failed == 0


def test_package_docstring_and_readme_python_section(monkeypatch):
    """The README's Python example, run as a doctest from the project folder (it reads the samples)."""
    monkeypatch.chdir(ROOT)
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=FLAGS,
                              globs={"np": __import__("numpy")})
    assert result.attempted >= 10 and result.failed == 0
    assert doctest.testmod(eosdetect, optionflags=FLAGS).failed == 0

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
def test_docstring_examples(name, tmp_path, monkeypatch):
    """Each module's examples pass and leave nothing in the temporary folder (issue 20, case 10)."""
    import tempfile

    module = importlib.import_module(name)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    result = doctest.testmod(module, optionflags=FLAGS, extraglobs={"np": __import__("numpy")})
    assert result.failed == 0
    assert not list(temp.iterdir()), f"{name}'s examples left {sorted(p.name for p in temp.iterdir())}"


def test_package_docstring_and_readme_python_section(monkeypatch, tmp_path):
    """The README's Python example, run as a doctest from the project folder (it reads the samples),
    leaving nothing in the temporary folder."""
    import tempfile

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=FLAGS,
                              globs={"np": __import__("numpy")})
    assert result.attempted >= 10 and result.failed == 0
    assert doctest.testmod(eosdetect, optionflags=FLAGS).failed == 0
    # TensorFlow's autograph keeps its generated code there until the process ends (it removes it then)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("__autograph_generated_file")]

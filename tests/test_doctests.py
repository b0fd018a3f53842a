"""The examples in the docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "eosdetect.io",
    "eosdetect.tiling",
    "eosdetect.postprocess",
    "eosdetect.metrics",
    "eosdetect.clinical",
    "eosdetect.differential",
    "eosdetect.overlay",
    "eosdetect.models.config",
    "eosdetect.models.helper_cnn",
    "eosdetect.annotations.masks",
    "eosdetect.recipes",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             extraglobs={"np": __import__("numpy")})
    assert result.failed == 0

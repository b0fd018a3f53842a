"""The examples in the docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "eosdetect.io",
    "eosdetect.core.tiling",
    "eosdetect.core.postprocess",
    "eosdetect.core.metrics",
    "eosdetect.core.clinical",
    "eosdetect.core.differential",
    "eosdetect.analysis.overlay",
    "eosdetect.models.config",
    "eosdetect.models.helper_cnn",
    "eosdetect.annotations.masks",
    "eosdetect.training.recipes",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             extraglobs={"np": __import__("numpy")})
    assert result.failed == 0

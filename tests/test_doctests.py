"""Runs the ``Examples:`` of the public API's docstrings (``pyode.__all__``, ``pyode.nn``, ``pyode.control``).

Each public object's docstring (and those of its methods), and the ``pyode.nn`` and ``pyode.control``
package docstrings, are collected with :class:`doctest.DocTestFinder` and run one test per object, with
empty globals, so every example imports what it uses and can be pasted as is. Every object must carry at
least one example, so a new public name without one fails here (the demos' and the multi-process
launcher's examples are marked ``+SKIP``: they train for seconds to minutes). ``pyode.native`` is not
covered here.
"""

from __future__ import annotations

import doctest
import inspect

import pytest
import torch

import pyode
import pyode.control
import pyode.nn

_NAMESPACES = (pyode, pyode.nn, pyode.control)
# Constants carry no docstring of their own; docs/api/pyode.md shows them with an example.
_NOT_DOCUMENTED_HERE = {"pyode.GRADIENT_MODES", "pyode.METHODS"}
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public_objects() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = [("pyode.nn (module docstring)", pyode.nn),
                                       ("pyode.control (module docstring)", pyode.control)]
    for module in _NAMESPACES:
        for name in module.__all__:
            qualified = f"{module.__name__}.{name}"
            if qualified not in _NOT_DOCUMENTED_HERE:
                found.append((qualified, getattr(module, name)))
    return found


def _doctests(qualified: str, obj: object) -> list[doctest.DocTest]:
    module = inspect.getmodule(inspect.unwrap(obj))  # where the finder looks for the methods' docstrings
    # For a module only its own docstring: its members are collected one by one from __all__.
    finder = doctest.DocTestFinder(exclude_empty=True, recurse=not inspect.ismodule(obj))
    return [test for test in finder.find(obj, qualified, module=module, globs={}) if test.examples]


@pytest.mark.parametrize(("qualified", "obj"), _public_objects(), ids=[q for q, _ in _public_objects()])
def test_docstring_examples_run(qualified: str, obj: object, one_thread) -> None:
    tests = _doctests(qualified, obj)
    assert tests, f"{qualified}'s docstring has no '>>>' example"
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    with torch.random.fork_rng(devices=[]):  # seeded for reproducible shapes/values; others' RNG untouched
        torch.manual_seed(0)
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {qualified} failed"

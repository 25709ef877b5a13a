"""Loads the native solver library (``libpyode_native.so``, the C ABI of ``pyode_native.h``) with cffi.

cffi's ABI mode (``ffi.dlopen``) needs no compiler at run time, releases the GIL around every call, and
gives function objects that numba's nopython mode can call directly (see :mod:`pyode.native.nopython`).
The declarations are read from the header itself (the text between its CDEF markers), so the C and Python
sides cannot drift apart.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

LIB_NAME = "libpyode_native.so"
HEADER_NAME = "pyode_native.h"
_ENV = "PYODE_NATIVE_LIB"


def _package_dirs() -> list[Path]:
    """Where an install puts the library: next to the package, or next to the extension module (an editable
    install keeps compiled files in site-packages while the Python sources stay in the checkout)."""
    dirs = [Path(__file__).resolve().parent.parent]
    spec = importlib.util.find_spec("pyode._C")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).resolve().parent)
    return dirs


def library_path() -> Path:
    """The library's path; ``$PYODE_NATIVE_LIB`` overrides the search."""
    if os.environ.get(_ENV):
        return Path(os.environ[_ENV])
    for d in _package_dirs():
        if (d / LIB_NAME).is_file():
            return d / LIB_NAME
    raise ImportError(f"pyode.native: {LIB_NAME} was not found next to the pyode package (searched "
                      f"{[str(d) for d in _package_dirs()]}); rebuild pyode (pip install -e .) or set ${_ENV}")


def header_text() -> str:
    """The declarations cffi parses: the CDEF block of ``pyode_native.h`` (the checkout's, else the installed
    copy next to the library)."""
    candidates = [Path(__file__).resolve().parents[2] / "csrc" / "include" / "pyode" / HEADER_NAME]
    candidates += [d / HEADER_NAME for d in _package_dirs()]
    for path in candidates:
        if path.is_file():
            text = path.read_text()
            return text.split("/* CDEF BEGIN */", 1)[1].split("/* CDEF END */", 1)[0]
    raise ImportError(f"pyode.native: {HEADER_NAME} not found (searched {[str(p) for p in candidates]})")


@functools.lru_cache(maxsize=1)
def load():
    """``(ffi, lib)``: the cffi declarations and the loaded library (once per process)."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(header_text())
    lib = ffi.dlopen(str(library_path()))
    if lib.pyode_native_abi_version() != ABI_VERSION:
        raise ImportError(f"pyode.native: {library_path()} has ABI version {lib.pyode_native_abi_version()}, "
                          f"this Python package expects {ABI_VERSION}; rebuild pyode (pip install -e .)")
    return ffi, lib


ABI_VERSION = 7
PACKED_HEADER = 24

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def compile_text():
    """Compile a program given as text; returns the `Compilation`."""
    from compound.compiler import compile_source

    def run(text: str, file: str = "example.cmp"):
        return compile_source(text, file)

    return run

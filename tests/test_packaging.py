"""The built wheel installs `compound` (grammar/ and backends/ under it) and the demos, `compound_demos`."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("compound-*.whl")
    return built


def test_wheel_puts_no_generic_top_level_names_into_site_packages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {"compound", "compound_demos", wheel.name.split("-py")[0] + ".dist-info"}
    assert {n.split("/")[0] for n in names} == tops
    assert "compound/grammar/compound.lark" in names
    assert "compound/backends/fn.py" in names
    assert not any(n.startswith(("grammar/", "backends/", "demos/", "tests/", "examples/")) for n in names)


def test_every_package_of_the_source_tree_is_listed_in_pyproject():
    """The packages are listed by hand in pyproject.toml; setuptools ships an unlisted subpackage as
    data with only a warning, so a new one left out would go unnoticed."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {
        "compound": "compound",
        "compound.grammar": "grammar",
        "compound.backends": "backends",
        "compound_demos": "demos",
    }
    found = {
        ".".join([name, *f.parent.relative_to(ROOT / folder).parts])
        for name, folder in roots.items()
        for f in (ROOT / folder).rglob("__init__.py")
        if "__pycache__" not in f.parts
    }
    assert found == listed


def test_wheel_ships_the_quick_demos_base_checkpoints(wheel):
    """`compound demo --quick` starts from them; they are package data in folders that setuptools sees as
    namespace packages (its build warns so), which a change in its discovery could silently drop."""
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = ROOT / "demos" / "base"
    files = [
        "compound_demos/" + f.relative_to(ROOT / "demos").as_posix()
        for f in shipped.rglob("*")
        if f.is_file()
    ]
    assert any(f.endswith("diffusion_pytorch_model.safetensors") for f in files)
    assert set(files) <= names


def test_installed_wheel_compiles_without_the_source_tree(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    program = tmp_path / "s.cmp"
    program.write_text((ROOT / "examples" / "storyboard.cmp").read_text())
    code = (
        "import compound, sys; s = compound.compile_file(sys.argv[1]); "
        "print(compound.__file__); print(len(s.factors))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(program)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": ""},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    where, factors = done.stdout.split()
    assert where.startswith(str(target)) and factors == "4"

"""The wheel holds what the source tree holds, at the paths it installs to.

setup.py maps two top-level folders into the package namespace (``backends/`` -> ``ofa_deploy.backends``,
``device_profiles/`` -> ``ofa_deploy.device_profiles``); a module left out of the wheel only shows up on a
user's machine, where the source checkout is not on the path. This builds the wheel from a private copy of
the tree (setuptools writes build/ and *.egg-info next to setup.py, so parallel pytest-xdist workers and the
real checkout must not share a directory) and compares file lists. ``make wheel-check`` installs and runs it.
"""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[1]
# Source folder -> where its files land in the wheel.
INSTALLED_AS = {
    "ofa_deploy": "ofa_deploy",
    "backends": "ofa_deploy/backends",
    "device_profiles": "ofa_deploy/device_profiles",
}
# What the copy leaves out when git cannot say which files belong to the tree.
IGNORED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
BUILD_TIMEOUT_S = 60


def _tree_files() -> list[str] | None:
    """The checkout's files (tracked, plus new files git does not ignore), or None without git."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        return None
    return [name for name in result.stdout.decode().split("\0") if name]


def _copy_tree(dest: Path) -> None:
    files = _tree_files()
    if files is None:
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*IGNORED))
        return
    for name in files:
        source = REPO / name
        if not source.is_file():  # deleted in the working tree but still in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _expected(tree: Path) -> set[str]:
    """Every module of the three folders, and every device profile, at its installed path."""
    expected = set()
    for folder, installed in INSTALLED_AS.items():
        patterns = {"device_profiles": ("*.py", "*.yaml"), "backends": ("*.py", "*.json")}.get(folder, ("*.py",))
        for pattern in patterns:
            for path in (tree / folder).rglob(pattern):
                if "__pycache__" not in path.parts:
                    expected.add(f"{installed}/{path.relative_to(tree / folder).as_posix()}")
    return expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the built wheel, the copy of the source tree it was built from)."""
    for module in ("build", "setuptools"):
        assert importlib.util.find_spec(module) is not None, f"`{module}` is missing: pip install -e '.[dev]'"
    root = tmp_path_factory.mktemp("wheel")
    tree, outdir = root / "src", root / "dist"
    _copy_tree(tree)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(outdir), str(tree)],
            cwd=tree,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"building the wheel took more than {BUILD_TIMEOUT_S} s")
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    wheels = sorted(outdir.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {outdir}, found {[w.name for w in wheels]}"
    return wheels[0], tree


def _names(wheel_path: Path) -> set[str]:
    with zipfile.ZipFile(wheel_path) as archive:
        return {name for name in archive.namelist() if not name.endswith("/")}


def test_wheel_holds_every_module_and_profile(wheel: tuple[Path, Path]) -> None:
    wheel_path, tree = wheel
    expected = _expected(tree)
    assert "ofa_deploy/__init__.py" in expected and "ofa_deploy/backends/__init__.py" in expected  # the scan worked
    assert any(name.endswith(".yaml") for name in expected)
    missing = sorted(expected - _names(wheel_path))
    assert not missing, f"{wheel_path.name} lacks {len(missing)} file(s) of the source tree: {missing}"


def test_wheel_has_only_the_package_at_its_root(wheel: tuple[Path, Path]) -> None:
    wheel_path, _ = wheel
    names = _names(wheel_path)
    for folder in ("backends", "device_profiles", "tests"):
        stray = sorted(name for name in names if PurePosixPath(name).parts[0] == folder)
        assert not stray, f"{folder}/ sits at the wheel root instead of under ofa_deploy/: {stray[:5]}"
    roots = {PurePosixPath(name).parts[0] for name in names}
    other = sorted(root for root in roots if root != "ofa_deploy" and not root.endswith(".dist-info"))
    assert not other, f"unexpected top-level entries in {wheel_path.name}: {other}"


def test_wheel_declares_the_console_script(wheel: tuple[Path, Path]) -> None:
    wheel_path, _ = wheel
    with zipfile.ZipFile(wheel_path) as archive:
        found = [name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt")]
        assert len(found) == 1, f"no entry_points.txt in {wheel_path.name}"
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(found[0]).decode())
    assert entry_points.has_option("console_scripts", "ofa-deploy"), dict(entry_points.items())
    target = entry_points.get("console_scripts", "ofa-deploy")
    assert target.replace(" ", "") == "ofa_deploy.cli.main:main"
    module = target.split(":")[0].strip().replace(".", "/") + ".py"
    assert module in _names(wheel_path)

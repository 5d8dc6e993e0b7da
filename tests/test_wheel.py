"""The built wheel carries its migrations: install it into a fresh venv and migrate a database."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_and_migrates(tmp_path: Path, kg_wheel: Path) -> None:
    wheel = kg_wheel
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names if "/" in name}
    assert "cli" not in top_level  # the CLI lives in kg/cli, not in a package named `cli`
    assert {"kg/cli/main.py", "kg/cli/__main__.py", "kg/cli/logs.py"} <= set(names)
    assert "kg/migrations/env.py" in names
    target = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # Third-party dependencies come from this interpreter (no network needed); kg itself only
    # from the wheel, which sits earlier on sys.path than this line's directory.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True,
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "KG_HOME": str(tmp_path / "home"),
           "KG_DATABASE_URL": f"sqlite:///{tmp_path / 'wheel.db'}"}
    env.pop("PYTHONPATH", None)

    def kg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([target / "bin" / "kg", *args], cwd=workdir, env=env,
                              capture_output=True, text=True)

    shown = subprocess.run([python, "-m", "pip", "show", "-f", "kg"], check=True,
                           capture_output=True, text=True).stdout
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines()]
    assert not any(f.startswith("cli/") for f in files) and "kg/cli/main.py" in files
    where = subprocess.run([python, "-c", "import kg; print(kg.__file__)"], cwd=workdir,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target))
    up = kg("db", "upgrade")
    assert up.returncode == 0, up.stderr
    as_module = subprocess.run([python, "-m", "kg.cli", "db", "current"], cwd=workdir, env=env,
                               capture_output=True, text=True)
    assert as_module.returncode == 0 and "up to date" in as_module.stdout
    shown = kg("admin", "extraction", "show", "--json")
    assert json.loads(shown.stdout)["provider"] == "llamacpp"

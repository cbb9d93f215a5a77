"""The package as a user installs it: apps load by path or by module name, the examples
ship inside the package (one copy, linked from apps/ and conf/), and a built wheel and
sdist hold every file the package needs at run time."""

from __future__ import annotations

import email
import importlib.util
import os
import pickle
import re
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import actorflow
from actorflow import cli, examples
from actorflow.config import parse_worker_args
from actorflow.errors import ApplicationError
from actorflow.loader import app_reference, is_module_name, load_application, module_name
from tests.conftest import ROOT

ARGS = ["--in", "votes@127.0.0.1:1", "--out", "127.0.0.1:2"]
STATIC = ("index.html", "app.js", "style.css")


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what loading a throwaway app adds to sys.path and sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("mypkg", "broken_app")):
            del sys.modules[name]


# -- loading by module name and by path -------------------------------------------------------


def test_module_names_and_paths_are_told_apart() -> None:
    assert is_module_name("actorflow.examples.alphabet") and is_module_name("myapp")
    assert not is_module_name("apps/alphabet.py") and not is_module_name("alphabet.py")
    assert not is_module_name("my-app") and not is_module_name("pkg..app")
    assert app_reference("actorflow.examples.alphabet") == "actorflow.examples.alphabet"
    assert app_reference(str(ROOT / "apps" / "alphabet.py")) == str(ROOT / "apps" / "alphabet.py")


def test_load_by_module_name_uses_the_dotted_name_for_pickles() -> None:
    app = load_application("actorflow.examples.alphabet", ARGS)
    assert app.name == "alphabet"
    mod = sys.modules["actorflow.examples.alphabet"]
    assert module_name("actorflow.examples.alphabet") == "actorflow.examples.alphabet"
    # Records of the app's classes name the module, importable in any process.
    votes = mod.TotalVotes()
    assert type(votes).__module__ == "actorflow.examples.alphabet"
    assert type(pickle.loads(pickle.dumps(votes))) is mod.TotalVotes


def test_load_by_path_uses_the_file_name() -> None:
    path = str(ROOT / "apps" / "word_count.py")
    app = load_application(path, ARGS)
    assert app.name == "word_count"
    assert module_name(path) == "word_count"
    assert sys.modules["word_count"].WordTotal.__module__ == "word_count"


def test_module_name_through_the_worker_flags() -> None:
    """The worker's flag parser makes --app absolute; a module name still loads."""
    cfg = parse_worker_args(
        ["--app", "actorflow.examples.word_count", "--control", "127.0.0.1:1", *ARGS]
    )
    assert module_name(cfg.app) == "actorflow.examples.word_count"
    assert load_application(cfg.app, cfg.app_args).name == "word_count"


def test_user_module_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_imports: None
) -> None:
    """`--app mypkg.myapp` finds mypkg in the current directory, as `python -m` would."""
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "myapp.py").write_text(
        (ROOT / "actorflow" / "examples" / "alphabet.py")
        .read_text()
        .replace('build_application("alphabet"', 'build_application("mine"')
    )
    monkeypatch.chdir(tmp_path)
    sys.path[:] = [p for p in sys.path if p not in ("", str(tmp_path))]
    app = load_application("mypkg.myapp", ARGS)
    assert app.name == "mine"
    assert sys.modules["mypkg.myapp"].__file__ == str(pkg / "myapp.py")
    # A package whose __init__ is the app, through the worker's flags (which make --app
    # absolute: here the path of the package's folder).
    (tmp_path / "mypkg_app").mkdir()
    (tmp_path / "mypkg_app" / "__init__.py").write_text((pkg / "myapp.py").read_text())
    cfg = parse_worker_args(["--app", "mypkg_app", "--control", "127.0.0.1:1", *ARGS])
    assert load_application(cfg.app, cfg.app_args).name == "mine"
    assert module_name(cfg.app) == "mypkg_app"


def test_neither_file_nor_module_names_the_value(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError, match=r"'nosuch\.app' is neither an existing file nor"):
        load_application("nosuch.app", ARGS)
    missing = str(tmp_path / "missing.py")
    with pytest.raises(ApplicationError, match=re.escape(f"{missing!r} does not exist")):
        load_application(missing, ARGS)
    with pytest.raises(ApplicationError, match="'my-app' is neither an existing file nor"):
        load_application("my-app", ARGS)


def test_a_module_that_fails_to_import_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_imports: None
) -> None:
    """A missing dependency of the app is not reported as a missing app."""
    (tmp_path / "broken_app.py").write_text("import no_such_dependency\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ApplicationError, match="failed to import.*no_such_dependency"):
        load_application("broken_app", ARGS)


# -- the shipped examples -------------------------------------------------------------------


@pytest.mark.parametrize("name", examples.NAMES)
def test_examples_ship_with_their_config_and_build_from_it(name: str) -> None:
    conf = examples.conf_path(name)
    assert conf.is_file()
    module = examples.module_name(name)
    assert importlib.util.find_spec(module) is not None
    cfg = parse_worker_args(["-c", str(conf)], app=module)
    assert load_application(module, cfg.app_args).name == name


@pytest.mark.parametrize("name", examples.NAMES)
def test_apps_and_conf_are_links_to_the_shipped_files(name: str) -> None:
    """One copy: what people read in apps/ and conf/ is what ships."""
    shipped = ROOT / "actorflow" / "examples"
    for link, target in (
        (ROOT / "apps" / f"{name}.py", shipped / f"{name}.py"),
        (ROOT / "conf" / f"{name}.conf", shipped / f"{name}.conf"),
    ):
        assert link.is_symlink(), f"{link} should be a link to {target}"
        assert not os.path.isabs(os.readlink(link)), f"{link} should be a relative link"
        assert link.resolve() == target.resolve()


def test_examples_command_prints_the_config_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["examples", "--conf", "word_count"]) == 0
    assert capsys.readouterr().out.strip() == str(examples.conf_path("word_count"))
    assert cli.main(["examples"]) == 0
    assert "actorflow.examples.vote_merge" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"actorflow {actorflow.__version__}"


# -- the built wheel and sdist --------------------------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build` into a temporary folder: the sdist, then the wheel built from it."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 and (
        "No matching distribution" in log or "Could not find a version" in log
    ):
        pytest.skip("the isolated build could not fetch setuptools from the package index")
    assert proc.returncode == 0, log
    return out


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_wheel_holds_examples_configs_and_static_files(dist: Path) -> None:
    wheel = _one(dist, f"actorflow-{actorflow.__version__}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        for name in examples.NAMES:
            for suffix in (".py", ".conf"):
                member = f"actorflow/examples/{name}{suffix}"
                assert member in infos, f"{member} is missing from {wheel.name}"
                assert not stat.S_ISLNK(infos[member].external_attr >> 16), member
                want = (ROOT / "actorflow" / "examples" / f"{name}{suffix}").read_bytes()
                assert zf.read(member) == want
        for static in STATIC:
            assert f"actorflow/metrics/static/{static}" in infos
        assert "actorflow/py.typed" in infos
        dist_info = f"actorflow-{actorflow.__version__}.dist-info"
        assert f"{dist_info}/licenses/LICENSE" in infos
        meta = email.message_from_bytes(zf.read(f"{dist_info}/METADATA"))
    assert meta["Version"] == actorflow.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("Classifier")
    assert not meta.get_all("Project-URL") and not meta.get("Home-page")
    assert meta["Summary"]


def test_sdist_holds_real_files_not_links(dist: Path) -> None:
    sdist = _one(dist, f"actorflow-{actorflow.__version__}.tar.gz")
    top = f"actorflow-{actorflow.__version__}"
    with tarfile.open(sdist) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert f"{top}/LICENSE" in members
        for name in examples.NAMES:
            shipped = (ROOT / "actorflow" / "examples" / f"{name}.py").read_bytes()
            for member in (
                f"{top}/actorflow/examples/{name}.py",
                f"{top}/actorflow/examples/{name}.conf",
                f"{top}/apps/{name}.py",
                f"{top}/conf/{name}.conf",
            ):
                assert member in members and members[member].isreg(), member
            extracted = tf.extractfile(members[f"{top}/apps/{name}.py"])
            assert extracted is not None and extracted.read() == shipped
        for static in STATIC:
            assert f"{top}/actorflow/metrics/static/{static}" in members

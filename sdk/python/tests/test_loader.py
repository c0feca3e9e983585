"""loader.py on its own: application paths, and what each mistake in one says."""
import sys

import pytest

from ferry_worker import loader


@pytest.fixture
def apps(tmp_path, monkeypatch):
    (tmp_path / "loader_app.py").write_text(
        "def app(environ, start_response):\n    return []\n"
        "class ns:\n    inner = app\n"
        "def make():\n    return app\n"
        "not_callable = 3\n"
        "def raises():\n    raise RuntimeError('factory failed')\n")
    (tmp_path / "loader_broken.py").write_text("raise ValueError('broken at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for m in ("loader_app", "loader_broken"):
        sys.modules.pop(m, None)


def test_paths_that_load(apps):
    app = loader.load("loader_app:app")
    assert loader.load("loader_app") is app                  # module alone: its `app`
    assert loader.load("loader_app:ns.inner") is app         # a dotted attribute
    assert loader.load("loader_app:make()") is app           # a factory, called


@pytest.mark.parametrize("path, error, says", [
    (":app", loader.AppImportError, "no module in application path"),
    ("loader_app:", loader.AppImportError, "no attribute in application path"),
    ("loader_app:missing", loader.AppImportError, "has no attribute 'missing'"),
    ("loader_app:not_callable", loader.AppImportError, "is not callable"),
    ("loader_app:raises()", RuntimeError, "factory failed"),
    ("loader_broken:app", ValueError, "broken at import"),
])
def test_paths_that_do_not_load_say_why(apps, path, error, says):
    with pytest.raises(error, match=says):
        loader.load(path)


def test_load_or_exit_exits_1_with_the_error_on_stderr(apps, capsys):
    with pytest.raises(SystemExit) as e:
        loader.load_or_exit("loader_broken:app", "wsgi")
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "ferry_worker.wsgi: cannot load the application 'loader_broken:app': " \
           "ValueError: broken at import" in err
    assert "Traceback" in err

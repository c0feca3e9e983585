"""Turning an application path such as ``myapp:app`` or ``pkg.mod:make_app()`` into
the application object, for the ``python -m ferry_worker.wsgi/asgi`` commands.

Owns only the import: the commands call it before the handshake, so that an app that
does not import makes the worker exit non-zero with the import error on stderr, and
ferry reports a start failure with that stderr tail.
"""
import importlib
import sys
import os


class AppImportError(ImportError):
    pass


def load(path):
    module_name, sep, attr = path.partition(":")
    if not module_name:
        raise AppImportError("no module in application path %r (expected module:attribute)" % path)
    if not sep:
        attr = "app"                  # `myapp` alone means `myapp:app`
    if not attr:
        raise AppImportError("no attribute in application path %r (expected module:attribute)" % path)
    # As `python -m` and Gunicorn do: modules next to where the command was run import.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    call = attr.endswith("()")
    name = attr[:-2] if call else attr
    obj = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppImportError("module %r has no attribute %r" % (module_name, name)) from None
    if call:
        obj = obj()
    if not callable(obj):
        raise AppImportError("%s is not callable" % path)
    return obj


def load_or_exit(path, what):
    """``load``, or exit status 1 with the error (and its traceback) on stderr."""
    try:
        return load(path)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt,)):
            raise
        import traceback
        traceback.print_exc()
        sys.stderr.write("ferry_worker.%s: cannot load the application %r: %s: %s\n"
                         % (what, path, type(e).__name__, e))
        sys.stderr.flush()
        raise SystemExit(1)

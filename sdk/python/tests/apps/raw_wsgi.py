"""A bare WSGI app that misuses the interface on purpose, one route per mistake
(test_session.py): each must cost that request only."""
import sys


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
    elif path == "/badstatus":
        start_response("2000 Far Too Big", [])
    elif path == "/badlength":
        start_response("200 OK", [("Content-Length", "many")])
    elif path == "/nostart":
        return [b"no head"]
    elif path == "/replace":
        # An error page after start_response, before any body: exc_info replaces the head.
        start_response("200 OK", [("X-First", "1")])
        try:
            raise KeyError("lookup failed")
        except KeyError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"try later"]
    elif path == "/after":
        # The same once body bytes went out: start_response re-raises, the request fails.
        write = start_response("200 OK", [])
        write(b"part")
        try:
            raise KeyError("too late")
        except KeyError:
            start_response("500 Oops", [], sys.exc_info())
        return [b"never"]
    else:
        start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

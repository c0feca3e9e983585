"""The ASGI hello app every ASGI server in bench.py runs."""
BODY = b"Hello, world!\n"
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"14")]}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return                  # no lifespan work
    await send(START)
    await send(END)

"""Finding the channel the master gave this process (SPEC section 2), and the rules
for leaving it (SPEC section 10, "Signals and process groups").

Owns: the ``FERRY_FD`` socket, the SIGTERM handler, and ``master_gone()``, the
group kill on EOF. Both mirror crates/ferry-worker/src/channel.rs.
"""
import os
import signal
import socket
import sys

FD_ENV = "FERRY_FD"

# Set once we know we lead our own process group, as every worker under ferry does.
# Only then may we kill the group: otherwise it is the group of whoever started us.
_leads_group = False


class NotAWorker(RuntimeError):
    """This process was not started by ferry (no usable FERRY_FD)."""


def from_env():
    """Takes the channel socket named by FERRY_FD; installs the SIGTERM rule."""
    var = os.environ.get(FD_ENV)
    if var is None:
        raise NotAWorker("%s is not set: this program is a ferry worker; run it as "
                         "`ferry -- <command>`" % FD_ENV)
    try:
        fd = int(var)
    except ValueError:
        raise NotAWorker("%s=%r is not a descriptor number" % (FD_ENV, var)) from None
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise NotAWorker("%s=%s is not a socket: %s" % (FD_ENV, var, e)) from None
    # The master left the descriptor inheritable so we could get it; programs this
    # worker runs must not hold the channel open after we exit.
    os.set_inheritable(fd, False)
    # Anything else reading the variable (a subprocess) must not think it is a worker.
    os.environ.pop(FD_ENV, None)
    die_with_group_on_sigterm()
    return sock


def die_with_group_on_sigterm():
    """Under ferry SIGTERM means "stop now" (a stuck worker, or the master died: it is
    the parent-death signal). Graceful stops come as Drain on the channel. So SIGTERM
    takes the whole process group down, anything the app started included. A Python
    handler runs on the main thread between bytecodes, and blocking calls there are
    interrupted to run it (PEP 475), so it works while handlers run on other threads."""
    global _leads_group
    if os.getpgrp() == os.getpid():
        _leads_group = True
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame):
    os.kill(0, signal.SIGKILL)


def master_gone():
    """EOF on the channel before we were done (even mid-drain): the master died or is
    stopping us at once. The master's exit closes the channel before the kernel sends
    the parent-death SIGTERM, so a worker that merely exited here could orphan its
    children: kill the group now, this process included. Logs nothing first (stderr is
    a pipe the dead master read). Outside ferry (not a group leader) just exits."""
    if _leads_group:
        os.kill(0, signal.SIGKILL)
    os._exit(0)


def fatal(message):
    """The master sent something we cannot decode: we disagree about the protocol,
    and carrying on risks mixing up requests (SPEC section 11). Log and exit non-zero;
    the master replaces us."""
    try:
        sys.stderr.write("ferry_worker: %s\n" % message)
        sys.stderr.flush()
    finally:
        os._exit(70)

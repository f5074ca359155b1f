"""Notebook execution without lost replies: a fix for the client that ``jupyter-book`` (myst-nb, nbclient) uses.

The stall it fixes
------------------
``make book`` sat idle for 20 minutes on ``explorer.ipynb`` (kernel and client both waiting in epoll) and then
reported success.  The cause is on the *client* side, in how jupyter_client sends on an asyncio socket:

1. nbclient waits for a cell's ``execute_reply`` with ``await shell_channel.get_msg(timeout)``, a pyzmq asyncio
   poll on the shell DEALER socket.  pyzmq watches the socket's ``ZMQ_FD``, which is *edge-triggered*: it signals
   when a command reaches the socket's mailbox, and any libzmq call on the socket (a send, reading ``ZMQ_EVENTS``)
   may consume that signal.
2. While the cell runs, nbclient also *sends* on that socket: its Output-widget mimic (``nbclient.output_widget``)
   answers every output captured by an ``ipywidgets.Output`` (``widgets.interactive`` has one) with a
   ``comm_msg`` on the shell channel.
3. ``jupyter_client.session.Session.send`` sends on a blocking ``zmq.Socket.shadow`` of the asyncio socket, so
   pyzmq's asyncio layer never learns of the send.  When the ``execute_reply`` arrives while the client is busy
   with the cell's IOPub messages, that raw ``zmq_send`` consumes the reply's wake-up; the reply sits in the socket
   and nothing re-checks it.  pyzmq's own asyncio ``send_multipart`` re-checks ``ZMQ_EVENTS`` after an immediate
   send whenever a receive or poll is waiting, and wakes it; the shadow send skips exactly that step.
4. The poll then returns only when its timeout fires: pyzmq's final level-triggered ``zmq_poll(0)`` finds the reply
   and the cell "succeeds" after the *full* timeout (1,200 s in the book's old configuration).

The kernel is not involved (ipykernel 6.29.5 and 7.4.0 both showed it).  Upstream: jupyter/jupyter_client#1059 (an
open pull request to stop shadowing in ``Session.send``, found for Voila's nbclient) and jupyter/nbclient#312 (a cell
with ipywidgets "sometimes blocks").  ``tests/test_notebooks.py`` reproduces it without fgcam: a notebook of 150
cells that print into an ``Output`` widget, where ~10 % of the cells took exactly the timeout without this fix.

The fix
-------
:func:`install` makes every asyncio kernel channel (``jupyter_client.channels.AsyncZMQSocketChannel``) send through
the asyncio socket's own ``send_multipart`` (via :class:`_AsyncSend`), so that pyzmq re-arms a waiting poll after
each send.  The message is built, signed and serialised by ``Session.send`` exactly as before.  The blocking and
threaded clients are unchanged (they poll level-triggered).  ``conf.py``-style use: ``_config.yml`` lists this
module under ``sphinx.local_extensions``, so ``jupyter-book build`` installs it before executing any notebook; the
tests call :func:`install` before they execute notebooks with the same jupyter-cache/nbclient call.
"""
from __future__ import annotations

import logging

__all__ = ["install", "installed", "setup"]

_log = logging.getLogger(__name__)


class _AsyncSend:
    """Stands for a ``zmq.asyncio.Socket`` in ``Session.send``: forwards ``send_multipart`` to the asyncio socket.

    ``Session.send`` would otherwise send on a blocking shadow of the socket (see the module docstring).  The asyncio
    ``send_multipart`` sends at once when it can (libzmq ``DONTWAIT``), and then, if a receive or poll waits on the
    socket, re-reads ``ZMQ_EVENTS`` and schedules the wake-up that the send may have consumed.  When the send cannot
    complete at once (high-water mark), pyzmq completes it from the event loop; an error then is logged.
    """

    def __init__(self, socket):
        self.socket = socket

    def send_multipart(self, frames, copy: bool = True, **kwargs):
        future = self.socket.send_multipart(frames, copy=copy, **kwargs)
        if future.done():
            future.result()  # raise a failed send here, as the blocking send did
        else:
            future.add_done_callback(_log_failure)
        return future


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        _log.error("sending a kernel message failed: %r", future.exception())


def _send(self, msg: dict) -> None:
    """``AsyncZMQSocketChannel.send``: ``Session.send`` through :class:`_AsyncSend`."""
    assert self.socket is not None
    self.session.send(_AsyncSend(self.socket), msg)


def install() -> None:
    """Make ``jupyter_client``'s asyncio channels send through their asyncio socket.  Idempotent."""
    from jupyter_client.channels import AsyncZMQSocketChannel

    if AsyncZMQSocketChannel.send is not _send:
        AsyncZMQSocketChannel.send = _send


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    from jupyter_client.channels import AsyncZMQSocketChannel

    return AsyncZMQSocketChannel.send is _send


def setup(app):
    """Sphinx extension entry point (``sphinx.local_extensions`` in ``book/_config.yml``)."""
    install()
    return {"parallel_read_safe": True, "parallel_write_safe": True}

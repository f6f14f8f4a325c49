"""Network faults between a client and the real database server, for tests: a TCP proxy that can
be cut and restored, and can drop the server's answer to a COMMIT after the server has done it."""

from __future__ import annotations

import socket
import threading
from typing import Any

import sqlalchemy
from sqlalchemy import event


class Proxy:
    """Forwards `listen`:`port` (127.0.0.1 by default) to `host`:`target_port` while up."""

    def __init__(self, host: str, target_port: int, listen: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.listen = listen
        with socket.socket() as probe:
            probe.bind((listen, 0))
            self.port = probe.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lose_answer = threading.Event()
        self._cut = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.listen, self.port))
        listener.listen()
        listener.settimeout(0.1)
        self._listening.set()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Refuse new connections and drop the open ones, as a server that went away."""
        self._listening.clear()
        if self._thread is not None:
            self._thread.join()
        for pair in self._pairs:
            _close(*pair)
        self._pairs.clear()

    def cut(self) -> None:
        """Pass nothing on either way, and close nothing, as a pulled cable: neither end hears
        that the other has gone."""
        self._cut.set()

    def lose_next_answer(self) -> None:
        """Drop the connection that next carries an answer from the server, instead of passing
        the answer on: the server did the work, and the client never hears of it."""
        self._lose_answer.set()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._listening.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                server = socket.create_connection(self.target)
                client.settimeout(None)
                self._pairs.append((client, server))
                for source, sink, answers in ((client, server, False), (server, client, True)):
                    threading.Thread(
                        target=self._pump, args=(source, sink, answers), daemon=True
                    ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if self._cut.is_set():
                    continue
                if answers and self._lose_answer.is_set():
                    self._lose_answer.clear()
                    break
                sink.sendall(data)
        except OSError:
            pass
        _close(source, sink)


def lose_commit_answer(engine: sqlalchemy.engine.Engine, proxy: Proxy, statement: str) -> None:
    """Through `proxy`, lose the server's answer to the COMMIT of the next transaction of
    `engine` that runs a statement starting with `statement`."""
    state = {"seen": False, "done": False}

    def watch(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        state["seen"] = state["seen"] or sql.startswith(statement)

    def commit(conn: Any) -> None:
        if state["seen"] and not state["done"]:
            state["done"] = True
            proxy.lose_next_answer()

    event.listen(engine, "before_cursor_execute", watch)
    event.listen(engine, "commit", commit)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

"""A unix-socket proxy between the exporter and a real dockerd, to make connections go
half-open: ``freeze()`` stops forwarding on the connections open now (the peer sees a live
socket that never speaks again), ``blackhole(True)`` does the same to every new one."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from pathlib import Path


class UnixProxy:
    def __init__(self, path: Path, upstream: Path) -> None:
        self.path = path
        self.upstream = upstream
        self._frozen: set[socket.socket] = set()
        self._blackhole = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._server.bind(str(path))
        self._server.listen(64)
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if self._blackhole:
                    self._frozen.add(client)  # held open, never answered
                    continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stopped.is_set():
                for key, _ in sel.select(timeout=0.2):
                    with self._lock:
                        if a in self._frozen:
                            continue
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
                with self._lock:
                    frozen = a in self._frozen
                if frozen:
                    # Half-open: hold both sockets, forward nothing, ever.
                    self._stopped.wait(3600)
                    return
        except OSError:
            return
        finally:
            sel.close()
            with self._lock:
                frozen = a in self._frozen
            if not frozen:
                a.close()
                b.close()

    def freeze(self) -> None:
        """The connections open now stop forwarding, without closing."""
        with self._lock:
            self._frozen.update(a for a, _ in self._pairs)

    def blackhole(self, on: bool) -> None:
        """New connections are accepted and never answered (a hung engine)."""
        with self._lock:
            self._blackhole = on
            if not on:
                for sock in [s for s in self._frozen if s not in {a for a, _ in self._pairs}]:
                    sock.close()
                    self._frozen.discard(sock)

    def stop(self) -> None:
        self._stopped.set()
        self._server.close()
        with self._lock:
            for a, b in self._pairs:
                a.close()
                b.close()
            for sock in self._frozen:
                sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

"""One lock per key, for work that waits on the network.

Checks that want the same thing at once (a registry's first contact, a token, a document, a
candidate tag) wait for one of them to fetch it. A lock stripe shared by unrelated keys would
make a registry that hangs delay another that shares its stripe; a lock per key, kept only
while someone holds or waits for it, delays only its own key and leaves nothing behind.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager


class KeyedLocks:
    """Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Hashable, tuple[threading.Lock, list[int]]] = {}  # key -> (lock, [users])

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._lock:
            lock, users = self._held.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._lock:
                users[0] -= 1
                if not users[0]:
                    del self._held[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

"""Stop requests (SIGTERM, SIGINT) that arrive before the training loop listens for them.

A training process listens from its first moment (:func:`listen`): `stop_train`, Ctrl-C or a supervisor may signal a
run that is still importing, generating data or building its model. Such a run ends as ``stopped``, like a stop
during training, instead of being killed half-prepared and shown as ``failed``.
"""

from __future__ import annotations

import signal
from typing import Optional

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[str] = []


class StopBeforeTraining(BaseException):
    """Raised in the main thread while the run is being set up; the message names the signal."""


def listen() -> dict:
    """Record stop signals; cheap, for the very start of a training process. Returns the previous handlers."""
    _received.clear()
    return {sig: signal.signal(sig, lambda signum, frame: _received.append(signal.Signals(signum).name))
            for sig in _SIGNALS}


def raise_from_now() -> dict:
    """From now on a stop signal raises StopBeforeTraining; returns the previous handlers, for the caller to put
    back. Call :func:`raise_if_received` next, inside the block that handles the exception."""
    def handler(signum, frame):
        raise StopBeforeTraining(signal.Signals(signum).name)

    return {sig: signal.signal(sig, handler) for sig in _SIGNALS}


def pending() -> Optional[str]:
    """The name of the first stop signal recorded by :func:`listen`, if any."""
    return _received[0] if _received else None


def raise_if_received() -> None:
    """Raise StopBeforeTraining for a stop signal recorded by :func:`listen`."""
    if _received:
        raise StopBeforeTraining(_received[0])


def restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)

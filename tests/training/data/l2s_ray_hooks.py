"""Filter hooks for the Ray engine tests, importable by the Ray workers (the test puts this folder on sys.path)."""

from __future__ import annotations

import hashlib
import os
import time


def chunk_digest(images) -> str:
    return hashlib.sha1(b"".join(im.tobytes() for im in images)).hexdigest()[:16]


def pause_once(flag: str, log: str, seconds: str = "300"):
    """Keeps every frame and logs ``<pid> <chunk digest>`` per call. The first call of the whole build (the one that
    creates ``flag``) writes its process id into ``flag`` and then waits to be killed."""

    def hook(images):
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {chunk_digest(images)}\n")
        try:
            fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return [True] * len(images)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(float(seconds))  # the test kills this process here
        return [True] * len(images)

    return hook


"""Run `python -m kg.cli` on a pseudo-terminal: for what only happens on a terminal (colour,
questions). Answers are typed ahead; the tty buffers them until the command reads."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios


def run_in_pty(args: list[str], env: dict[str, str], answers: str = "",
               columns: int = 100, timeout: float = 60) -> tuple[int, str]:
    """(exit code, everything the terminal showed: stdout, stderr and the echoed answers)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**env, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "kg.cli", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    if answers:
        os.write(master, answers.encode())
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not data:
            break
        output += data
    code = proc.wait(timeout=timeout)
    os.close(master)
    return code, output.decode("utf-8", errors="replace")

"""What `kg serve` was started with, and the checks made before it binds."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from kg.errors import UsageError

MB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Options of one server (the database and the LLM settings come from kg itself)."""

    host: str = "127.0.0.1"
    port: int = 8765
    roots: tuple[Path, ...] = ()  # folders whose files `POST /runs` may ingest by path
    upload_dir: Path | None = None  # where uploaded files are kept (default KG_HOME/uploads)
    models_dir: Path | None = None
    max_json_bytes: int = 1 * MB
    max_upload_bytes: int = 50 * MB
    max_runs: int = 4  # ingestions this server runs at once
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are given
    allowed_hosts: tuple[str, ...] = ()  # Host names besides loopback and `host` (a proxy's)
    # Whether a loopback server answers without a token until the first one is created. Off:
    # `kg serve` creates a token on its first start instead; only tests and embedding
    # programs turn this on.
    open_until_first_token: bool = False
    health_ttl_s: float = 5.0
    metrics_ttl_s: float = 5.0  # several scrapers within this time share one set of queries
    health_timeout_s: float = 3.0
    token_ttl_s: float = 2.0  # how long a token lookup (or "no token exists") is trusted
    collection_ttl_s: float = 2.0  # how long a collection's name is trusted (renames)
    poll_s: float = 0.5  # how often run events are read from the database

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Whether every address `host` stands for is a loopback address (127/8, ::1)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback
                               for i in infos)


def resolve_roots(roots: list[Path] | tuple[Path, ...]) -> tuple[Path, ...]:
    """The allowed roots as real folders (symlinks resolved), or a UsageError naming a bad one."""
    resolved = []
    for root in roots:
        real = root.expanduser().resolve()
        if not real.is_dir():
            raise UsageError(f"--root {root} is not a folder; give an existing folder")
        resolved.append(real)
    return tuple(resolved)

"""The admin token: what an operator shows Pilot's API port to mint or revoke workload tokens and to
step a root rotation (``Authorization: Bearer <admin token>``).

Istio leaves minting a workload's credential to Kubernetes, whose TokenRequest API only answers an
authenticated caller (an admin kubeconfig); here Pilot mints them, so it asks for a credential of
its own: a random bootstrap token written on first start to ``admin_token_file`` (default
``<data_dir>/admin-token``, mode 0600, like a kubeadm ``admin.conf`` or a k3s server token), or one
the operator put there (replicas share one by pointing at the same file). Missing: 401; another
token: 403. Reading the mesh (``GET``) needs none, as before.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from sofamesh.core.errors import ConfigError

_MIN_LENGTH = 16


class AdminToken:
    """The token in one file; :meth:`check` an ``Authorization`` header against it."""

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self._token = token.encode()

    @classmethod
    def load_or_create(cls, path: Path, field: str = "admin_token_file") -> AdminToken:
        """Read ``path``; write a new random token there (0600) when it does not exist."""
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(32) + "\n")
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(field, f"cannot read or create {path}: {exc}") from None
        if len(token) < _MIN_LENGTH or any(c.isspace() for c in token):
            raise ConfigError(field, f"{path}: the admin token must be one word of at least {_MIN_LENGTH} characters")
        return cls(path, token)

    def check(self, authorization: str | None, what: str) -> tuple[int, str] | None:
        """``None`` when ``authorization`` carries the admin token, else (401 or 403, why) for ``what``."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return 401, (
                f"{what} needs the admin token: 'Authorization: Bearer <the content of {self.path}>' "
                "(sofamesh pilot ... --admin-token-file FILE)"
            )
        if not hmac.compare_digest(value.strip().encode(), self._token):
            return 403, f"{what}: this is not the admin token (the one in {self.path})"
        return None


__all__ = ["AdminToken"]

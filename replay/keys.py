"""The pseudonym key: where it comes from, where it is kept, and its fingerprint.

Pseudonyms are ``HMAC-SHA256(key, rule + ":" + value)``. Whoever holds the key can test guesses
(a customer list) against every pseudonym, so the key never lives in a store or a cassette:

1. ``$REPLAY_REDACTION_KEY`` when set (a team's CI secret, set alike in production and CI). Its
   value is a passphrase (the key is its SHA-256), or the text of a key file (``arkey1:<64 hex>``,
   the key itself), so a team can paste a store's key file into the secret.
2. Else a key file beside the store, ``<store>.key`` (``replay.db.key``), mode 0600, holding
   ``arkey1:<64 hex>``. It is created on first use with ``O_EXCL | O_NOFOLLOW`` through a private
   temporary file and ``link()``, so processes opening a new store at once agree on one key and
   nothing is ever written through a symlink.

A PostgreSQL store (many hosts write to one server) has no "beside": its key is
``$REPLAY_REDACTION_KEY``, else the key file named by ``$REPLAY_REDACTION_KEY_FILE`` (or the
store's ``key_file=`` option), created once there and then copied to every host that records or
replays, else opening the store fails with the fix (`server_store_key`). A per-host key made up on
the spot would give each host other pseudonyms for the same customer.

The store keeps only `fingerprint(key)`: a 16-hex HMAC of a fixed label under the key. It tells two
keys apart (a replay says so when they differ) but does not help to test a guess against a
pseudonym (the label is not a ``rule:value`` input).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pathlib
import secrets
import stat
import time

from replay.errors import StoreError

__all__ = [
    "ENV_VAR",
    "FILE_ENV_VAR",
    "RedactionKeyMismatchWarning",
    "mismatch_message",
    "KEY_PREFIX",
    "env_key",
    "fingerprint",
    "key_file_path",
    "read_key_file",
    "key_text",
    "load_or_create_key_file",
    "parse_key_text",
    "server_store_key",
    "write_key_file",
]

#: The environment variable holding a shared key (a passphrase or a key file's text).
ENV_VAR = "REPLAY_REDACTION_KEY"
#: The environment variable naming a key file for a store on a server (PostgreSQL).
FILE_ENV_VAR = "REPLAY_REDACTION_KEY_FILE"
#: The prefix of a key file's text: ``arkey1:`` then the key as 64 hex digits.
KEY_PREFIX = "arkey1:"
# No ":" in it: a pseudonym's HMAC input is always "rule:value", so the two never coincide.
_FP_LABEL = b"agent-replay/key-fingerprint/v1"


class RedactionKeyMismatchWarning(UserWarning):
    """A replay pseudonymises with another key than the recording did (both fingerprints named)."""


def mismatch_message(run_id: str, recorded: str, current: str, source: str) -> str:
    """The sentence a replay says when the recording's key fingerprint differs from its own."""
    return (
        f"replay of {run_id}: the recording was redacted with key {recorded}, this replay uses key "
        f"{current} ({source}); pseudonyms of values the agent's own code holds differ, so calls "
        f"made with them show as unrecorded. Set ${ENV_VAR} to the recording's key (the team's CI "
        "secret) to replay with the same pseudonyms."
    )


def fingerprint(key: bytes) -> str:
    """A short public name of `key`: 16 hex digits, the same for the same key, nothing else."""
    return hmac.new(bytes(key), _FP_LABEL, hashlib.sha256).hexdigest()[:16]


def key_text(key: bytes) -> str:
    """The text form of `key`, as a key file holds it and ``$REPLAY_REDACTION_KEY`` accepts it."""
    return KEY_PREFIX + bytes(key).hex()


def parse_key_text(text: str) -> bytes:
    """The key a key file's text or ``$REPLAY_REDACTION_KEY`` stands for.

    ``arkey1:<hex>`` is the key itself; anything else is a passphrase whose SHA-256 is the key (as
    before key files existed, so pseudonyms of teams that set a passphrase stay the same).
    """
    text = text.strip()
    if text.startswith(KEY_PREFIX):
        try:
            key = bytes.fromhex(text[len(KEY_PREFIX) :])
        except ValueError:
            key = b""
        if len(key) >= 16:
            return key
        raise ValueError(
            f"a key starting with {KEY_PREFIX!r} must be followed by at least 32 hex digits"
        )
    return hashlib.sha256(text.encode("utf-8")).digest()


def env_key() -> bytes | None:
    """The key set in ``$REPLAY_REDACTION_KEY``, or None.

    Raises:
        ValueError: the variable starts with ``arkey1:`` but is not a well-formed key.
    """
    value = os.environ.get(ENV_VAR)
    if not value or not value.strip():
        return None
    try:
        return parse_key_text(value)
    except ValueError as e:
        raise ValueError(
            f"${ENV_VAR} is not usable: {e}; copy the whole text of a .key file"
        ) from None


def key_file_path(store_path: str | os.PathLike[str]) -> pathlib.Path:
    """Where the key of the store at `store_path` is kept: the same name plus ``.key``."""
    return pathlib.Path(f"{os.fspath(store_path)}.key")


def read_key_file(path: pathlib.Path) -> bytes | None:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if path.is_symlink():
            raise StoreError(
                f"{path} is a dangling symlink: agent-replay does not follow links to its key "
                f"file; "
                "remove it (a new key file is then created)",
                path=str(path),
            ) from None
        return None
    except OSError as e:
        if path.is_symlink():
            raise StoreError(
                f"{path} is a symlink: agent-replay does not follow links to its key file; "
                f"replace it "
                "with the file itself (mode 0600) or set $REPLAY_REDACTION_KEY",
                path=str(path),
            ) from None
        raise StoreError(f"cannot read the key file {path}: {e.strerror}", path=str(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(
                f"{path} is not a regular file: it must hold the store's key", path=str(path)
            )
        if st.st_mode & 0o077:
            raise StoreError(
                f"the key file {path} can be read by other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): "
                f"run `chmod 600 {path}`",
                path=str(path),
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    if not data.strip():
        return None  # being written by another process right now (no-link file systems only)
    try:
        return parse_key_text(data.decode("ascii"))
    except ValueError:  # UnicodeDecodeError is one
        raise StoreError(
            f"the key file {path} is damaged (it must hold one line {KEY_PREFIX}<64 hex digits>): "
            "restore it from where the team keeps the key (pseudonyms depend on it)",
            path=str(path),
        ) from None


def write_key_file(path: pathlib.Path, key: bytes) -> bool:
    """Create the key file at `path` holding `key`; False if a file (or link) is already there.

    Written to a private temporary file first and published with ``link()``, which never replaces
    and never follows an existing name: a concurrent reader sees either no file or the whole key.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as e:
        raise StoreError(
            f"cannot create the key file {path}: {e.strerror}; make the folder writable or set "
            f"${ENV_VAR}",
            path=str(path),
        ) from None
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # a restrictive umask could have left it 0400
            os.write(fd, (key_text(key) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # A file system without hard links: O_EXCL on the final name, same guarantees but a
            # reader may briefly see an empty file (it then reads again, see below).
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                return False
            try:
                os.write(fd, (key_text(key) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def load_or_create_key_file(path: pathlib.Path) -> bytes:
    """The key in the file at `path`, creating the file with a new random key when missing.

    Raises:
        StoreError: the path is a symlink, not a regular file, readable by others, or damaged.
    """
    for attempt in range(50):
        key = read_key_file(path)
        if key is not None:
            return key
        if write_key_file(path, secrets.token_bytes(32)):
            key = read_key_file(path)
            if key is not None:
                return key
        time.sleep(0.01 * attempt)
    raise StoreError(f"cannot create or read the key file {path}", path=str(path))


def server_store_key(
    store: str, key_file: str | os.PathLike[str] | None = None
) -> tuple[bytes, str]:
    """The key of a store on a server, and where it came from (``"env"`` or ``"file"``).

    ``$REPLAY_REDACTION_KEY`` wins; else `key_file`, else ``$REPLAY_REDACTION_KEY_FILE``: that
    file's key, the file created (0600, random key) when missing.

    Raises:
        StoreError: no key is configured (naming `store`, never a secret), or the key file is
            unusable.
    """
    try:
        key = env_key()
    except ValueError as e:
        raise StoreError(str(e), path=store) from None
    if key is not None:
        return key, "env"
    path = key_file if key_file is not None else os.environ.get(FILE_ENV_VAR) or None
    if path is None:
        raise StoreError(
            f"{store} keeps no pseudonym key (a server store never does, and there is no folder "
            f"beside it for a key file): set ${ENV_VAR} to the team's key on every host, or set "
            f"${FILE_ENV_VAR} to a key file's path (created 0600 on first use; copy it to every "
            "host that records or replays into this store)",
            path=store,
        )
    return load_or_create_key_file(pathlib.Path(path)), "file"

"""Encrypted checkpoints: round trip, wrong or missing key, key formats,
the ``crypto`` extra missing."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from pipekit import (
    CheckpointConfigError,
    CheckpointCorrupted,
    CheckpointDecryptError,
    CheckpointManager,
    ConfigError,
)
from pipekit.checkpoints import crypto
from pipekit.errors import EXIT_USAGE

pytest_plugins = ["checkpoint_conformance"]  # the checkpoint_store fixture, over every store

NS = "pipe.stage"
SECRET = "the plaintext must not be stored"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "checkpoint.key"
    p.write_text(crypto.generate_key() + "\n")
    return p


def test_round_trip_full_and_delta_stores_no_plaintext(
    checkpoint_store: Any, key_file: Path
) -> None:
    enc = {"key_file": str(key_file)}
    m = CheckpointManager(checkpoint_store, NS, encryption=enc, compression=None, delta_min_size=0)
    state = {f"k{i}": {"secret": SECRET, "i": i} for i in range(200)}
    full = m.save(state)
    state["k5"]["secret"] = "changed " + SECRET
    d = m.save(state)
    assert (full.kind, d.kind) == ("full", "delta")
    key_id = crypto.key_id_of(crypto.parse_key(key_file.read_bytes(), "test"))
    assert full.encrypted and full.key_id == d.key_id == key_id and len(key_id) == 8
    assert full.keys == () and full.n_keys == 200  # key names are not written in clear
    for sid in checkpoint_store.list(NS):
        assert SECRET.encode() not in checkpoint_store.get(NS, sid), sid
    fresh = CheckpointManager(checkpoint_store, NS, encryption=enc)
    assert fresh.load() == state
    assert fresh.load(full.id)["k5"]["secret"] == SECRET
    assert fresh.verify().ok
    # deleting the base rebases the delta, encrypted again
    fresh.delete(full.id)
    (rebased,) = fresh.list()
    assert rebased.kind == "full" and rebased.key_id == key_id
    assert CheckpointManager(checkpoint_store, NS, encryption=enc).load() == state


def test_a_wrong_key_names_both_key_ids(
    checkpoint_store: Any, key_file: Path, tmp_path: Path
) -> None:
    CheckpointManager(checkpoint_store, NS, encryption={"key_file": str(key_file)}).save({"a": 1})
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    m = CheckpointManager(checkpoint_store, NS, encryption={"key_file": str(other)})
    saved_id = m.info().key_id
    with pytest.raises(CheckpointDecryptError) as exc:
        m.load()
    msg = str(exc.value)
    assert f"encrypted with key id {saved_id}" in msg
    assert f"the key given has key id {m.cipher.key_id}" in msg
    assert exc.value.exit_code == EXIT_USAGE
    with pytest.raises(CheckpointDecryptError, match=f"encrypted \\(key id {saved_id}\\); no key"):
        CheckpointManager(checkpoint_store, NS).load()
    assert CheckpointManager(checkpoint_store, NS).verify().ok  # integrity needs no key


def test_a_header_key_id_that_matches_but_a_tampered_aad_is_corruption(
    checkpoint_store: Any, key_file: Path
) -> None:
    """Blobs are bound to their place: one moved under another entry does
    not decrypt, even when its index entry is forged to match."""
    enc = {"key_file": str(key_file)}
    m = CheckpointManager(checkpoint_store, NS, encryption=enc)
    a = m.save({"a": 1})
    b = m.save({"b": 2})
    # forge: b's blob bytes re-labelled as seq 1 (header CRC and sha recomputed)
    from pipekit.checkpoints import format as fmt

    header, payload = fmt.unpack(checkpoint_store.get(NS, b.blob), "b")
    header["seq"] = a.seq
    forged = fmt.pack(header, bytes(payload))
    checkpoint_store.put(NS, a.blob, forged)
    index = m._read_index().copy()
    import attrs

    index.entries[a.seq] = attrs.evolve(a, size=b.size, sha256=b.sha256, compression=b.compression)
    m._write_index(index)
    with pytest.raises(CheckpointCorrupted, match="failed authentication"):
        CheckpointManager(checkpoint_store, NS, encryption=enc).load(a.id)


def test_key_from_an_environment_variable_in_any_format(
    checkpoint_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = os.urandom(32)
    for i, text in enumerate(
        [
            raw.hex(),
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
        ]
    ):
        monkeypatch.setenv("PK_KEY", text)
        m = CheckpointManager(checkpoint_store, f"ns{i}", encryption={"key_env": "PK_KEY"})
        m.save({"i": i})
        assert m.cipher.key_id == crypto.key_id_of(raw)
        monkeypatch.setenv("PK_KEY", raw.hex().upper())
        assert CheckpointManager(
            checkpoint_store, f"ns{i}", encryption={"key_env": "PK_KEY"}
        ).load() == {"i": i}
    for size in (16, 24):
        assert crypto.parse_key(os.urandom(size).hex().encode(), "x").__len__() == size


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        ({"key_env": "PK_UNSET"}, {}, "PK_UNSET .* is not set"),
        ({"key_env": "PK_BAD"}, {"PK_BAD": "too-short"}, "does not hold an AES key"),
        ({"key_file": "/nonexistent/key"}, {}, "cannot read the checkpoint key file"),
        ({}, {}, "exactly one of key_file or key_env"),
        ({"key_file": "a", "key_env": "B"}, {}, "both are set"),
        ({"key": "x"}, {}, "unknown checkpoint encryption option"),
        ("a-key", {}, "must be a table"),
    ],
)
def test_bad_encryption_settings_are_config_errors(
    checkpoint_store: Any,
    monkeypatch: pytest.MonkeyPatch,
    options: Any,
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("PK_UNSET", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(CheckpointConfigError, match=message) as exc:
        CheckpointManager(checkpoint_store, NS, encryption=options)
    assert isinstance(exc.value, ConfigError) and exc.value.exit_code == EXIT_USAGE


def test_a_key_file_of_text_that_is_not_a_key_is_refused(
    tmp_path: Path, checkpoint_store: Any
) -> None:
    p = tmp_path / "k"
    p.write_bytes(b"a password of 31 characters...\n")  # 32 bytes, but text
    with pytest.raises(CheckpointConfigError, match="does not hold an AES key"):
        CheckpointManager(checkpoint_store, NS, encryption={"key_file": str(p)})


def test_without_the_crypto_extra_encryption_is_a_config_error(
    checkpoint_store: Any, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cryptography`` not importable (as without pipekit-core[crypto]):
    asking for encryption fails, it never silently stores plaintext."""
    for name in [n for n in sys.modules if n == "cryptography" or n.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import raises ImportError
    with pytest.raises(CheckpointConfigError, match=r"pip install 'pipekit-core\[crypto\]'"):
        CheckpointManager(checkpoint_store, NS, encryption={"key_file": str(key_file)})
    assert checkpoint_store.list(NS) == []
    m = CheckpointManager(checkpoint_store, NS)  # unencrypted use needs no extra
    m.save({"a": 1})
    assert m.load() == {"a": 1}

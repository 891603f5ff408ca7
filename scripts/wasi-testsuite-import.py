#!/usr/bin/env python3
"""Imports the preview1 tests of WebAssembly/wasi-testsuite into crates/cli/tests/wasi-testsuite/.

Usage: scripts/wasi-testsuite-import.py CHECKOUT [REF]

CHECKOUT is a git clone of https://github.com/WebAssembly/wasi-testsuite; REF (default prod/testsuite-base, the branch
that carries the project's prebuilt binaries) is the commit imported. For each of the three preview1 suites (Rust, C,
AssemblyScript) it copies the prebuilt .wasm files, their .json expectations and the directories they mount, and
strips the custom sections (DWARF debug information and names: the Rust binaries are debug builds of 2 MiB each, 89 KiB
without them; code, data and imports are untouched). PROVENANCE.md records the commit and, for every module, the
SHA-256 of the upstream file and of the committed one, so anyone can re-run this script and compare.
"""
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tarfile
import io

SUITES = ["rust", "c", "assemblyscript"]
DEST = pathlib.Path(__file__).resolve().parent.parent / "crates/cli/tests/wasi-testsuite"


def leb128(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def strip_custom_sections(module: bytes) -> bytes:
    if module[:4] != b"\0asm":
        raise ValueError("not a WebAssembly module")
    out = bytearray(module[:8])
    i = 8
    while i < len(module):
        section_id = module[i]
        size, start = leb128(module, i + 1)
        end = start + size
        if section_id != 0:
            out += module[i:end]
        i = end
    return bytes(out)


def main() -> None:
    checkout = pathlib.Path(sys.argv[1])
    ref = sys.argv[2] if len(sys.argv) > 2 else "prod/testsuite-base"
    commit = subprocess.check_output(["git", "-C", checkout, "rev-parse", ref], text=True).strip()
    paths = [f"tests/{suite}/testsuite/wasm32-wasip1" for suite in SUITES]
    archive = subprocess.check_output(["git", "-C", checkout, "archive", commit, *paths])
    if DEST.exists():
        shutil.rmtree(DEST)
    rows = []
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            suite = member.name.split("/")[1]
            relative = pathlib.PurePosixPath(member.name).relative_to(f"tests/{suite}/testsuite/wasm32-wasip1")
            target = DEST / suite / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member).read()
            if member.name.endswith(".wasm"):
                stripped = strip_custom_sections(data)
                rows.append((f"{suite}/{relative}", hashlib.sha256(data).hexdigest(), hashlib.sha256(stripped).hexdigest()))
                data = stripped
            target.write_bytes(data)
    rows.sort()
    lines = [
        "# Provenance of the WASI testsuite fixture",
        "",
        "- upstream: https://github.com/WebAssembly/wasi-testsuite",
        f"- ref: {ref}",
        f"- commit: {commit}",
        "- imported by: scripts/wasi-testsuite-import.py (custom sections stripped; nothing else changed)",
        "",
        "| module | upstream sha256 | committed sha256 |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {upstream} | {committed} |" for name, upstream, committed in rows]
    (DEST / "PROVENANCE.md").write_text("\n".join(lines) + "\n")
    print(f"imported {len(rows)} modules from {commit} into {DEST}")


if __name__ == "__main__":
    main()

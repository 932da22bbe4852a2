"""What the benchmark scripts share: running a logged command, and the real model's local copy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"


def run_logged(command: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> float:
    """Run a command with its output in `log` (environment: this one's, updated with `env`); the wall-clock
    seconds it took. Exits on failure."""
    print(f"$ {' '.join(f'{key}={value}' for key, value in (env or {}).items())} {' '.join(command)}",
          file=sys.stderr)
    start = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"command failed (exit {result.returncode}); the end of {log}:\n{log.read_text()[-3000:]}")
    return seconds


def commit() -> str:
    """The checkout's commit, short (what a printed figure came from)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "unknown (no git here)"


def ensure_model(name: str = MODEL) -> Path:
    """The harness's safetensors copy of a packaged model, converted from its GGUF if missing."""
    from omegaconf import OmegaConf

    from harness.config import ModelConfig
    from harness.engine.hf.loading import load_backend
    from harness.inputs.registry import MODEL_CONFIG_DIR
    from harness.sources.cache import model_entry

    model_dir = model_entry(name).path
    if not (model_dir / "config.json").exists():
        schema = OmegaConf.structured(ModelConfig)
        config = OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.load(MODEL_CONFIG_DIR / f"{name}.yaml")))
        load_backend(config, "cpu")
    return model_dir

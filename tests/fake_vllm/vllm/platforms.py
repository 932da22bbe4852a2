"""vllm.platforms as the worker reads it (tests/fake_vllm/vllm/__init__.py)."""


class _Platform:
    device_type = "cpu"

    @staticmethod
    def is_cpu() -> bool:
        return True


current_platform = _Platform()

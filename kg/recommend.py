"""Which quantization of a model fits the GPU: weights + KV cache for the context + overhead."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from kg.errors import UsageError

# Bytes per parameter as served by llama.cpp / Ollama (GGUF averages include scales).
QUANTS = [
    ("FP16", 2.0, "fp16"),
    ("8-bit (Q8_0)", 1.0625, "q8_0"),
    ("4-bit (Q4_K_M)", 0.606, "q4_K_M"),
]
HEADROOM = 0.9  # leave 10% of VRAM for the driver, fragmentation and activations
RUNTIME_GB = 0.5
# Ollama library tags whose quantization suffix pattern is known.
OLLAMA_TAGS = {
    "qwen3": "{base}:{size}-{quant}",
    "qwen2.5": "{base}:{size}-instruct-{quant}",
    "llama3.1": "{base}:{size}-instruct-{quant}",
    "llama3.2": "{base}:{size}-instruct-{quant}",
    "mistral": "{base}:{size}-instruct-{quant}",
    "gemma2": "{base}:{size}-instruct-{quant}",
    "phi3": "{base}:{size}-mini-instruct-{quant}",
}


@dataclass(frozen=True)
class Shape:
    """What the KV cache needs per token: layers x KV heads x head size (GQA models)."""

    layers: int
    kv_heads: int = 8
    head_dim: int = 128

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2  # K and V, 16-bit


def shape_for(params_b: float) -> Shape:
    """Typical decoder shapes by size (Llama 3 / Qwen 2.5 families)."""
    for limit, layers in ((4, 28), (9, 32), (15, 48), (35, 64), (80, 80)):
        if params_b <= limit:
            return Shape(layers)
    return Shape(126, 16)


def parse_params(text: str) -> float:
    """'70B', '7b', '8.2B', '500M' -> billions of parameters."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bBmM])\s*", text)
    if not match:
        raise UsageError(f"--params must look like 7B, 70B or 500M (got {text!r})")
    value = float(match.group(1))
    return value / 1000 if match.group(2) in "mM" else value


def params_from_name(model: str) -> float | None:
    """Read the size from a model name such as qwen3:14b or Llama-3.1-70B-Instruct."""
    match = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model)
    return float(match.group(1)) if match else None


def parse_vram(text: str) -> float:
    """'24GB', '24', '80 GiB', '16384MB' -> gigabytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(gb|gib|g|mb|mib|m)?\s*", text.lower())
    if not match:
        raise UsageError(f"--vram must look like 24GB or 16384MB (got {text!r})")
    value = float(match.group(1))
    return value / 1024 if (match.group(2) or "gb").startswith("m") else value


def detect_vram() -> tuple[float | None, str]:
    """Total VRAM of the largest NVIDIA GPU, from nvidia-smi, and how it was found."""
    if shutil.which("nvidia-smi") is None:
        return None, "no GPU detected (nvidia-smi not found); give --vram to plan for one"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True).stdout
        sizes = [float(line) / 1024 for line in out.splitlines() if line.strip()]
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        return None, f"nvidia-smi failed ({exc}); give --vram"
    if not sizes:
        return None, "nvidia-smi lists no GPU; give --vram"
    largest = max(sizes)
    return largest, f"detected with nvidia-smi ({len(sizes)} GPU(s), largest {largest:.0f} GB)"


def ollama_tag(model: str, quant: str) -> str | None:
    """The `ollama pull` tag for a quantization, where the library's naming is known."""
    base, _, size = model.partition(":")
    size = size.split("-")[0]
    pattern = OLLAMA_TAGS.get(base)
    if not pattern or not size:
        return None
    return pattern.format(base=base, size=size, quant=quant)


def recommend(model: str, *, params: str | None, vram: str | None,
              context_window: int) -> dict[str, Any]:
    """A table of quantizations with memory estimates, and the best one that fits."""
    params_b = parse_params(params) if params else params_from_name(model)
    if params_b is None:
        raise UsageError(f"cannot tell the size of {model!r} from its name; give --params 8B")
    vram_gb: float | None
    if vram is not None:
        vram_gb, source = parse_vram(vram), "given with --vram"
    else:
        vram_gb, source = detect_vram()
    shape = shape_for(params_b)
    kv_gb = shape.kv_bytes_per_token() * context_window / 1e9
    options: list[dict[str, Any]] = []
    for label, bytes_per_param, quant in QUANTS:
        weights = params_b * bytes_per_param
        total = weights + kv_gb + RUNTIME_GB
        fits = vram_gb is not None and total <= vram_gb * HEADROOM
        options.append({"quantization": label, "weights_gb": round(weights, 1),
                        "kv_cache_gb": round(kv_gb, 1), "total_gb": round(total, 1),
                        "fits": fits, "ollama_pull": ollama_tag(model, quant)})
    choice = next((o for o in options if o["fits"]), None)
    if choice is not None:
        verdict = f"{choice['quantization']} fits in {vram_gb:.0f} GB with 10% headroom"
        gpu_layers = -1
    else:
        four_bit = options[-1]
        budget = (vram_gb or 0) * HEADROOM - kv_gb - RUNTIME_GB
        fraction = max(0.0, min(1.0, budget / float(four_bit["weights_gb"]))) if vram_gb else 0
        gpu_layers = int(shape.layers * fraction)
        verdict = (f"nothing fits entirely; CPU offload with 4-bit: --gpu-layers {gpu_layers} of "
                   f"{shape.layers} on the GPU, the rest on the CPU (slow)" if vram_gb
                   else "CPU only: 4-bit, --gpu-layers 0")
        choice = four_bit
    return {"model": model, "params_b": params_b, "vram_gb": vram_gb, "vram_source": source,
            "context_window": context_window, "layers_assumed": shape.layers,
            "options": options, "recommended": choice["quantization"],
            "gpu_layers": gpu_layers, "ollama_pull": choice["ollama_pull"], "verdict": verdict}

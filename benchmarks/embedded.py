"""The embedded model on this machine: prompt and decode speed, seconds per 300-word chunk."""

from __future__ import annotations

import statistics
import time

import benchmarks.common  # noqa: F401  (puts the repository on sys.path)
from kg.extraction.prompt import messages_for, system_prompt
from kg.extraction.schema import bounds_for_budget, output_schema
from kg.extraction.vocabulary import TypeInfo, Vocabulary
from kg.profiles.settings import ProviderSettings
from kg.providers.base import estimate_tokens
from kg.providers.llamacpp import LlamaCppProvider

WORDS_300 = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light "
    "into chemical energy. Inside the chloroplasts, chlorophyll absorbs mostly red and blue "
    "light. The light reactions split water molecules, release oxygen as a by-product and "
    "store energy in ATP and NADPH. The Calvin cycle then uses that energy to fix carbon "
    "dioxide from the air into sugars such as glucose. The enzyme RuBisCO catalyses the first "
    "step of carbon fixation and is thought to be the most abundant protein on Earth. "
    "Photosynthesis depends on temperature, water supply and the concentration of carbon "
    "dioxide; when stomata close during drought, less carbon dioxide enters the leaf and the "
    "rate falls. C4 plants such as maize and sugarcane concentrate carbon dioxide around "
    "RuBisCO in bundle sheath cells, which reduces photorespiration in hot climates. CAM "
    "plants such as cacti open their stomata at night and store carbon as malic acid, which "
    "saves water in deserts. The oxygen in the atmosphere comes almost entirely from "
    "photosynthesis, and the process forms the base of nearly every food chain. Fossil fuels "
    "such as coal and oil are the remains of organisms that captured sunlight millions of "
    "years ago. Researchers study artificial photosynthesis to produce hydrogen or liquid "
    "fuels from sunlight, water and carbon dioxide, and crop scientists try to engineer a "
    "more efficient RuBisCO to raise yields. Satellites measure chlorophyll fluorescence to "
    "estimate how much carbon forests and oceans absorb each season. Phytoplankton in the "
    "oceans perform about half of the photosynthesis on the planet, although they make up "
    "less than one percent of its plant biomass. Seasonal changes in daylight drive the "
    "cycles of growth in temperate forests, and the colour of autumn leaves appears when "
    "chlorophyll breaks down and other pigments such as carotenoids become visible."
)

VOCAB = Vocabulary([TypeInfo(i, n, "causal", "directed") for i, n in enumerate(
    ["causes", "enables", "part_of", "uses", "produces", "depends_on"], 1)])


def measure(runs: int = 3, threads: int = 2, max_output_tokens: int = 1024) -> dict[str, object]:
    import llama_cpp

    settings = ProviderSettings(
        profile_name="bench", revision=1, provider="llamacpp", model="smollm2", base_url=None,
        api_key_env=None, temperature=0.1, top_p=0.9, thinking_mode="off", gpu_layers=0,
        num_threads=threads, context_window=4096, max_output_tokens=max_output_tokens,
        max_parallel=1, max_retries=0, timeout_s=600, keep_alive=None)
    provider = LlamaCppProvider(settings)
    started = time.perf_counter()
    provider.load()
    load_s = time.perf_counter() - started
    bounds = bounds_for_budget(max_output_tokens)
    messages = messages_for(system_prompt(VOCAB, bounds), WORDS_300)
    schema = output_schema(bounds)
    per_call, prompt_tps, decode_tps, completion_tokens = [], [], [], []
    for _ in range(runs):
        llama_cpp.llama_perf_context_reset(provider._llama._ctx.ctx)
        completion = provider.complete(messages, schema)
        perf = llama_cpp.llama_perf_context(provider._llama._ctx.ctx)
        per_call.append(completion.latency_s)
        if perf.t_p_eval_ms > 0:
            prompt_tps.append(perf.n_p_eval / perf.t_p_eval_ms * 1000)
        if perf.t_eval_ms > 0:
            decode_tps.append(perf.n_eval / perf.t_eval_ms * 1000)
        completion_tokens.append(completion.completion_tokens)
    provider.close()
    return {
        "model": "SmolLM2-135M-Instruct Q4_1", "threads": threads, "load_s": round(load_s, 2),
        "chunk_words": len(WORDS_300.split()),
        "chunk_tokens_model": provider_tokens(settings, WORDS_300),
        "chunk_tokens_estimate": estimate_tokens(WORDS_300),
        "prompt_tokens_per_s": round(statistics.median(prompt_tps), 1) if prompt_tps else None,
        "decode_tokens_per_s": round(statistics.median(decode_tps), 1) if decode_tps else None,
        "completion_tokens_median": statistics.median(completion_tokens),
        "ms_per_call_median": round(statistics.median(per_call) * 1000),
    }


def provider_tokens(settings: ProviderSettings, text: str) -> int:
    provider = LlamaCppProvider(settings)
    try:
        return provider.tokenize_count(text)
    finally:
        provider.close()


if __name__ == "__main__":
    print(measure())

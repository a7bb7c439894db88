"""The study's checkpoints at their real size, with random weights, in the file layout the Hugging Face hub
serves them in, written offline: so the loading code a cluster user runs first runs here too.

- :func:`write_mhubert147`: ``utter-project/mHuBERT-147`` as ``save_pretrained`` writes it (config.json,
  model.safetensors) plus the hub's preprocessor_config.json;
- :func:`write_speechllm_2b`: ``skit-ai/speechllm-2B``: a custom-code config.json, a HuBERT x-large audio
  encoder under ``audio_encoder.encoder.*``, the CNN connector, and a TinyLlama-1.1B of the real shapes
  whose bytes are never written (sparse holes: a stub that the loader must not read), in shards of at most
  5 GB with ``model.safetensors.index.json``, in the order ``save_pretrained`` writes them.

Weights are seeded normal draws (norm weights 1, biases 0; the speechllm encoder's reused from a pool of
4 M draws), so the same call writes the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cltm_pipeline.models.checkpoint import INDEX, write_safetensors

__all__ = ["MHUBERT_147", "MHUBERT_147_PREPROCESSOR", "SPEECHLLM_2B_CONFIG", "TINYLLAMA", "write_mhubert147",
           "write_speechllm_2b", "llm_shapes"]

#: utter-project/mHuBERT-147's config.json (HuBERT base: 12 layers, 768 wide, group-norm CNN), as HubertConfig keys
MHUBERT_147: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "conv_bias": False, "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "feat_extract_norm": "group", "do_stable_layer_norm": False, "feat_proj_layer_norm": True,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "activation_dropout": 0.1,
    "attention_dropout": 0.1, "feat_proj_dropout": 0.1, "hidden_dropout": 0.1, "final_dropout": 0.1,
    "apply_spec_augment": True, "mask_time_prob": 0.05, "vocab_size": 32, "architectures": ["HubertModel"],
}
#: its preprocessor_config.json on the hub (227 bytes)
MHUBERT_147_PREPROCESSOR: dict[str, Any] = {
    "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
    "padding_side": "right", "padding_value": 0, "return_attention_mask": False, "sampling_rate": 16000,
}
#: skit-ai/speechllm-2B's config.json keys that matter here (skit-ai/SpeechLLM's SpeechLLMModelConfig)
SPEECHLLM_2B_CONFIG: dict[str, Any] = {
    "model_type": "custom_model", "architectures": ["SpeechLLMModel"],
    "auto_map": {"AutoConfig": "config.SpeechLLMModelConfig", "AutoModel": "model.SpeechLLMModel"},
    "audio_enc_dim": 1280, "llm_dim": 2048, "audio_encoder_name": "facebook/hubert-xlarge-ll60k",
    "audio_processor_name": "facebook/hubert-large-ls960-ft", "llm_model_name": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "torch_dtype": "float32",
}
#: TinyLlama-1.1B's shapes: vocabulary, width, MLP width, layers, key/value width (grouped-query attention)
TINYLLAMA = {"vocab": 32000, "hidden": 2048, "intermediate": 5632, "layers": 22, "kv": 256}
SHARD_BYTES = 5_000_000_000  # save_pretrained's max_shard_size of the time ("5GB")


POOL = 1 << 22  # random values drawn once; larger tensors cycle through them at a per-tensor offset


def _init(name: str, shape: tuple[int, ...], pool: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Norm weights 1, biases 0, other weights N(0, 0.02) values from ``pool`` (drawing a fresh normal
    value for each of ~1 B parameters took most of a minute on this CPU; the loader's work is the same)."""
    if name.endswith("bias"):
        return torch.zeros(shape)
    if "norm" in name and name.endswith("weight") or name.endswith(("original0", "weight_g")):
        return torch.ones(shape)
    n = int(torch.Size(shape).numel())
    start = int(torch.randint(0, pool.numel(), (1,), generator=gen))
    reps = -(-(start + n) // pool.numel())
    return (pool.repeat(reps)[start:start + n] if reps > 1 else pool[start:start + n]).reshape(shape)


def write_mhubert147(out: Path, seed: int = 0) -> Path:
    """A random mHuBERT-147 (~94 M parameters) written by ``save_pretrained``, with the hub's preprocessor config."""
    from transformers import HubertConfig, HubertModel

    out = Path(out)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = HubertModel(HubertConfig(**MHUBERT_147))
    finally:
        torch.random.set_rng_state(gen_state)
    model.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(MHUBERT_147_PREPROCESSOR, indent=2) + "\n")
    return out


def llm_shapes(prefix: str = "llm_model.") -> dict[str, tuple[int, ...]]:
    """Tensor shapes of TinyLlama-1.1B as the merged-LoRA causal LM of speechllm-2B names them."""
    v, h, i, n, kv = (TINYLLAMA[k] for k in ("vocab", "hidden", "intermediate", "layers", "kv"))
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}model.embed_tokens.weight": (v, h)}
    for layer in range(n):
        p = f"{prefix}model.layers.{layer}."
        shapes.update({
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
        })
    shapes[f"{prefix}model.norm.weight"] = (h,)
    shapes[f"{prefix}lm_head.weight"] = (v, h)
    return shapes


def write_speechllm_2b(out: Path, seed: int = 0, *, encoder: dict[str, Any] | None = None,
                       audio_encoder_name: str = "facebook/hubert-xlarge-ll60k", connector_prefix: str = "connector.layer.",
                       llm: bool = True, shard_bytes: int = SHARD_BYTES, weight_norm_legacy: bool = False) -> Path:
    """skit-ai/speechllm-2B in its hub layout (module order: audio encoder, connector, LLM). ``encoder``:
    HubertConfig keys (default: hubert-xlarge-ll60k's, the real size); ``llm``: include the LLM stub;
    ``weight_norm_legacy``: name the positional convolution's weight-norm tensors ``weight_g``/``weight_v``."""
    from transformers import HubertConfig, HubertModel

    from cltm_pipeline.models.speechllm import HUBERT_XLARGE_LL60K

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = encoder if encoder is not None else HUBERT_XLARGE_LL60K
    with torch.device("meta"):
        meta = HubertModel(HubertConfig(**spec))
    shapes: dict[str, tuple[int, ...]] = {}
    for name, t in meta.state_dict().items():
        if weight_norm_legacy:
            name = name.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v")
        shapes["audio_encoder.encoder." + name] = tuple(t.shape)
    enc, llm_dim = int(spec["hidden_size"]), SPEECHLLM_2B_CONFIG["llm_dim"] if encoder is None else 2 * int(spec["hidden_size"])
    for i, (cin, cout) in zip((1, 3, 5), ((enc, llm_dim // 2), (llm_dim // 2, llm_dim), (llm_dim, llm_dim))):
        shapes[f"{connector_prefix}{i}.weight"] = (cout, cin, 5)
        shapes[f"{connector_prefix}{i}.bias"] = (cout,)
    llm_names = llm_shapes() if llm else {}
    shapes.update(llm_names)

    shards: list[dict[str, tuple[int, ...]]] = [{}]
    size = 0
    for name, shape in shapes.items():  # save_pretrained's greedy split, in module order
        nbytes = 4 * int(torch.Size(shape).numel())
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = shape
        size += nbytes
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randn(POOL, generator=gen) * 0.02
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors" if len(shards) > 1 else "model.safetensors"
        total += write_safetensors(
            out / fname, {n: (s, torch.float32) for n, s in shard.items()},
            lambda n: None if n in llm_names else _init(n, shard[n], pool, gen),
        )
        weight_map.update({n: fname for n in shard})
    if len(shards) > 1:
        (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    config = {**SPEECHLLM_2B_CONFIG, "audio_encoder_name": audio_encoder_name}
    if encoder is not None:
        config.update(audio_enc_dim=enc, llm_dim=llm_dim)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out

"""A plan for a study before any weight is read: neurons, memory, device map and time.

The config is read as JSON (never through code shipped with the model: a config whose
``auto_map`` names such code is refused), every field the plan uses is checked, and the model
is built from it on the meta device: no weight is downloaded or read, and no forward runs, so
a plan for a 72B model, or a 671B mixture of experts, costs seconds. Neurons are counted from
the modules' shapes (the same sites ``lesion.neurons.discover_sites`` finds, tested against
it), and a mixture of experts counts every routed expert's neurons. Memory and time come from
shapes:

- weights: parameters x bytes per dtype (all experts);
- Stage 1 holds, per neuron and token, float32 clean activations, running sums and one
  batch's pending sums (3 x T x N x 4 bytes; ``--samples auto`` adds sums of squares and
  their pending batch: 5 x);
- one batch of masked rows holds float32 logits, vocab x T x rows x 4 bytes;
- time: a forward costs FLOPs ~ 2 x active parameters x tokens (a mixture of experts runs
  only the experts its router picks for a token; Stage 1 runs the decoder body, no LM head; a
  masked row runs the whole model), times seconds per FLOP measured on runs of this machine
  (CALIBRATION: the default model's measured figures), divided by the data-parallel ranks. GPU
  times use an *assumed* throughput (``gpu_tflops``): no GPU has been measured.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, LesionError, ParameterError

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 2 ** 30

# Wall seconds per FLOP of this project's machine (2 CPU cores, float32, quiet), from the
# default model's measured figures in docs/speed.md (benchmarks/speed.py): Stage 1, K = 100,
# 49 tokens, 1.041e12 FLOPs in 6.02 s; full-forward masked rows, 13.5 rows/s of 1.318e10
# FLOPs each. Validated out of sample on Gemma 3 270M in docs/plan.md.
CALIBRATION = {
    "stage1_s_per_flop": 5.78e-12,
    "row_s_per_flop": 5.62e-12,
    "source": "calibrated on SmolLM2-135M's measured Stage 1 and masked rows, 2 quiet CPU cores (docs/plan.md)",
}
# Seconds per FLOP fall with the model's width on this CPU (wider matrices use its vector units
# better): one thread's CPU seconds per FLOP, SmolLM2 (hidden 576) against Qwen2.5-Coder-1.5B
# (hidden 1536), measured with benchmarks/plan_calibration.py, give s/FLOP ~ hidden^-0.40 in
# Stage 1 and hidden^-0.43 in masked rows. Applied between the two measured widths only (no
# extrapolation); validated out of sample on Gemma 3 270M and a Qwen2 0.5B (docs/plan.md).
WIDTH_EXPONENT = {"stage1": -0.40, "row": -0.43}
CALIBRATED_WIDTHS = (576, 1536)
DEFAULT_GPU_GIB = 80.0  # one H100-class GPU's memory, where `gpus` is given without `gpu_memory`
DEFAULT_GPU_TFLOPS = 200.0  # assumed effective bfloat16 throughput of one H100-class GPU (not measured)
STAGE2_ROW_BATCH = 8  # find_critical_set's widest chunk
LOGIT_BYTES = 2 ** 29  # heel.scorer's cap on one batch's float32 logits

# Bounds on the options: far beyond any study, they only catch typos (a plan is closed-form, so
# none of them bounds a loop except `gpus`, which places one copy on at most layers + 2 GPUs).
MAX_SAMPLES = 100_000  # scan's cap on K
MAX_GPUS = 1_000_000
MAX_GPU_GIB = 1e6  # GiB per GPU: a petabyte
MAX_GPU_TFLOPS = 1e6
MAX_ROWS = 10 ** 9
MAX_TOKENS = 2 ** 27  # with no context length in the config; otherwise the context is the bound

# A config.json is a few KB, nested 3 or 4 levels: anything far beyond is not a model's config.
MAX_CONFIG_BYTES = 16 * 2 ** 20
MAX_CONFIG_DEPTH = 32
# The sizes a plan (and the model transformers builds from the config) reads, with their bounds
# (minimum, maximum, whether null means "the family's default"). The maxima are about ten times
# the largest published models' (hidden 16,384, MLP 53,248, 126 layers, vocab 262,144, 384 experts).
SIZE_FIELDS: dict[str, tuple[int, int, bool]] = {
    **dict.fromkeys(("hidden_size", "n_embd", "d_model"), (1, 2 ** 17, False)),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "moe_intermediate_size", "shared_expert_intermediate_size",
                     "intermediate_size_mlp"), (1, 2 ** 20, False)),
    "n_inner": (1, 2 ** 20, True),
    **dict.fromkeys(("num_hidden_layers", "n_layer"), (1, 1024, False)),
    **dict.fromkeys(("num_attention_heads", "n_head"), (1, 2 ** 12, False)),
    "num_key_value_heads": (1, 2 ** 12, True),
    "head_dim": (1, 2 ** 14, True),
    "vocab_size": (1, 2 ** 24, False),
    **dict.fromkeys(("max_position_embeddings", "n_positions"), (1, 2 ** 27, False)),
    **dict.fromkeys(("num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok"), (1, 4096, False)),
    "n_shared_experts": (0, 4096, True),
    "first_k_dense_replace": (0, 1024, False),
    **dict.fromkeys(("decoder_sparse_step", "interleave_moe_layer_step"), (1, 1024, False)),
    **dict.fromkeys(("n_group", "topk_group"), (1, 4096, True)),
}
# Experts over all layers: DeepSeek-V3 has 58 x 256 = 14,848; a family that keeps its experts as a
# list of modules builds one module per expert and layer.
MAX_EXPERT_LAYERS = 2 ** 17
# Names of the routed experts' count and of the experts each token runs, across families.
EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")
TOP_K_FIELDS = ("num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_top_k")


@dataclass(frozen=True)
class Shapes:
    """What a plan needs from a model: parameter counts and its neuron sites."""
    name: str
    model_type: str
    parameters: int
    body_parameters: int  # what Stage 1 runs: all but the input embedding and an untied LM head
    head_parameters: int  # the LM head's matmul (vocab x hidden), tied or not
    vocab: int
    layers: int
    neurons: dict[str, int]  # component kind -> neurons
    model: object  # the meta model (for the device map)
    hidden: int = 0  # residual width: wider matrices run faster per FLOP (see WIDTH_EXPONENT)
    active_parameters: int = 0  # what one token runs: all but the routed experts its router does not pick
    active_body_parameters: int = 0
    context: int | None = None  # the longest text the model takes (max_position_embeddings), when it says
    moe: dict | None = None  # the mixture of experts, counted (None: a dense model)
    uncounted: tuple[str, ...] = field(default=())  # modules whose neurons a plan cannot count from shapes


# --- the config --------------------------------------------------------------------------------

def read_config(model: str | None = None, config: str | None = None):
    """(name, transformers config) from a config.json (``config``) or a model spec, reading no
    weights and running no code from the model: a folder's or a hub repository's config.json is
    read as JSON, a GGUF alias or file gives its metadata (or its dequantised cache's config).
    Every field is checked (:class:`ConfigError`, naming it)."""
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ParameterError("config", f"{config!r} is not a file: pass a model's config.json")
        return path.stem, _config_from_json(path, "config", str(path))
    from .loading import _gguf_cache, resolve
    from .options import DEFAULT_MODEL
    spec = model or DEFAULT_MODEL
    folder, gguf = resolve(spec)
    if gguf is not None:
        cached = _gguf_cache(folder, gguf) / "config.json"
        if cached.is_file():
            return spec, _config_from_json(cached, "model", str(cached))
        return spec, _config_from_gguf(folder, gguf, spec)
    path = Path(folder) / "config.json"
    if Path(folder).is_dir():
        if not path.is_file():
            raise ParameterError("model", f"{folder!r} has no config.json: pass a model folder (its config.json "
                                          "beside its weights), a .gguf file or an alias")
        return spec, _config_from_json(path, "model", str(path))
    return spec, _config_from_json(_hub_config(spec), "model", f"{spec}'s config.json")


def _hub_config(repo: str) -> Path:
    """The config.json of a hub repository (from the Hugging Face cache, else downloaded as
    transformers would: HF_HUB_OFFLINE, HF_HOME and HF_TOKEN apply); the file only, no weights."""
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(repo, "config.json"))
    except Exception as e:  # noqa: BLE001 - any failure to fetch one file means the same thing to the user
        raise ParameterError("model", f"{repo!r}: cannot read its config.json from the Hugging Face hub or its "
                                      f"cache ({_first_line(e)}): pass a local folder, a .gguf file or an "
                                      "alias") from None


def read_config_json(path: Path, parameter: str, source: str) -> dict:
    """A config.json as a dict, checked: a JSON object, nested at most MAX_CONFIG_DEPTH levels,
    finite numbers only, no ``auto_map`` (code shipped with the model)."""
    from .hub import refuse_remote_code
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(parameter, source, None, f"is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a "
                                                       "model's config.json")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(parameter, source, None, f"cannot be read ({_first_line(e)})") from None
    try:
        values = json.loads(text)
    except RecursionError:
        raise ConfigError(parameter, source, None, f"nests deeper than {MAX_CONFIG_DEPTH} levels: not a model's "
                                                   "config.json") from None
    except ValueError as e:
        raise ConfigError(parameter, source, None, f"is not JSON ({_first_line(e)}): pass a model's "
                                                   "config.json") from None
    if not isinstance(values, dict):
        raise ConfigError(parameter, source, None, f"holds a JSON {_json_type(values)}, not an object: pass a "
                                                   "model's config.json")
    _check_nesting_and_numbers(values, parameter, source)
    refuse_remote_code(values, source)
    return values


def _json_type(value) -> str:
    return {list: "list", str: "string", type(None): "null", bool: "boolean"}.get(type(value), "number")


def _check_nesting_and_numbers(values: dict, parameter: str, source: str) -> None:
    """No level beyond MAX_CONFIG_DEPTH and no NaN or infinity anywhere (json reads NaN and
    Infinity; no field of a model's config is ever one). Iterative: a deep file cannot recurse."""
    stack: list[tuple[str, object, int]] = [("", values, 0)]
    while stack:
        where, value, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(parameter, source, where, f"nests deeper than {MAX_CONFIG_DEPTH} levels: not a "
                                                        "model's config.json")
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v, depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(parameter, source, where, f"is {value}: a config's numbers are finite")


def check_config_fields(values: dict, parameter: str, source: str) -> None:
    """Each size field (SIZE_FIELDS) of the config and of its text config: an integer within its
    bounds (not a string, a float, a boolean or null, unless null means the family's default)."""
    for scope, fields in (("", values), ("text_config.", values.get("text_config"))):
        if scope and fields is None:
            continue
        if not isinstance(fields, dict):
            raise ConfigError(parameter, source, scope.rstrip("."), f"must be an object (got a JSON "
                                                                    f"{_json_type(fields)})")
        for name, (low, high, nullable) in SIZE_FIELDS.items():
            if name not in fields or (fields[name] is None and nullable):
                continue
            value = fields[name]
            if type(value) is not int or not low <= value <= high:
                shown = f"the string {value!r}" if isinstance(value, str) else json.dumps(value)
                raise ConfigError(parameter, source, scope + name, f"must be an integer from {low} to {high:,} "
                                                                   f"(got {shown}): fix the config.json")


def _config_from_json(path: Path, parameter: str, source: str):
    values = read_config_json(path, parameter, source)
    check_config_fields(values, parameter, source)
    model_type = values.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(parameter, source, "model_type", "is missing: pass a transformers config.json")
    check_config_relations(None, values, parameter, source)  # before transformers' own, less precise checks
    from transformers import AutoConfig
    kwargs = {k: v for k, v in values.items() if not k.startswith("_") and k != "model_type"}
    with _quiet_transformers():
        try:
            built = AutoConfig.for_model(model_type, **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever transformers' own checks raise about this file
            raise ConfigError(parameter, source, None, f"is refused by transformers ({_first_line(e)})") from None
    check_config_relations(built, values, parameter, source)
    return built


def _config_from_gguf(folder: str, gguf: str, spec: str):
    """A GGUF file's config, from its header (no tensors read), checked as a config.json is."""
    from transformers import AutoConfig
    source = f"{spec} (GGUF header)"
    with _quiet_transformers():
        try:
            built = AutoConfig.from_pretrained(folder, gguf_file=gguf)
        except Exception as e:  # noqa: BLE001 - a GGUF header transformers cannot read, whatever the reason
            raise ConfigError("model", source, None, f"cannot be read by transformers ({_first_line(e)})") from None
    values = built.to_dict()
    _check_nesting_and_numbers(values, "model", source)
    check_config_fields(values, "model", source)
    check_config_relations(built, values, "model", source)
    return built


def check_config_relations(config, values: dict, parameter: str, source: str) -> None:
    """What the fields must satisfy together: heads divide the width (unless ``head_dim`` is
    given), key-value heads divide the heads, a token's experts are among the experts, dense
    layers and expert groups fit. ``config`` is the transformers config (its defaults included),
    or None to check the file's own values before transformers reads them."""
    raw = values.get("text_config") if isinstance(values.get("text_config"), dict) else values
    text = config.get_text_config() if config is not None else None

    def at(name: str):
        value = getattr(text, name, None) if text is not None else raw.get(name)
        return value if type(value) is int else None

    def refuse(name: str, problem: str):
        raise ConfigError(parameter, source, name, problem)

    hidden, heads, layers = at("hidden_size"), at("num_attention_heads"), at("num_hidden_layers")
    if text is not None:
        for name, value in (("hidden_size", hidden), ("num_hidden_layers", layers), ("vocab_size", at("vocab_size"))):
            if value is None or value < 1:
                refuse(name, f"must be a positive integer (got {getattr(text, name, None)!r}): fix the config.json")
        if getattr(text, "num_attention_heads", None) is not None and (heads is None or heads < 1):
            refuse("num_attention_heads", "must be a positive integer: fix the config.json")
    if hidden is not None and heads is not None and raw.get("head_dim") is None and hidden % heads:
        refuse("num_attention_heads", f"({heads}) must divide hidden_size ({hidden}), or the config must give head_dim")
    kv_heads = at("num_key_value_heads")
    if kv_heads is not None and heads is not None and (kv_heads < 1 or heads % kv_heads):
        refuse("num_key_value_heads", f"({kv_heads}) must divide num_attention_heads ({heads})")
    experts_field = next((n for n in EXPERT_COUNT_FIELDS if at(n) is not None), None)
    experts = at(experts_field) if experts_field else None
    top_k = next((at(n) for n in TOP_K_FIELDS if at(n) is not None), None)
    if experts is not None and top_k is not None and top_k > experts:
        refuse("num_experts_per_tok", f"({top_k}) must be at most the experts ({experts_field}: {experts})")
    if experts is not None and layers is not None and experts * layers > MAX_EXPERT_LAYERS:
        refuse(experts_field, f"({experts}) x num_hidden_layers ({layers}) must be at most {MAX_EXPERT_LAYERS:,} "
                              "experts in all: not a model a plan can build")
    dense = at("first_k_dense_replace")
    if dense is not None and layers is not None and dense > layers:
        refuse("first_k_dense_replace", f"({dense}) must be at most num_hidden_layers ({layers})")
    groups, top_groups = at("n_group"), at("topk_group")
    if experts is not None and groups is not None and (groups < 1 or experts % groups):
        refuse("n_group", f"({groups}) must divide the experts ({experts})")
    if groups is not None and top_groups is not None and not 1 <= top_groups <= groups:
        refuse("topk_group", f"({top_groups}) must be 1..n_group ({groups})")
    only_dense = getattr(text, "mlp_only_layers", None) if text is not None else raw.get("mlp_only_layers")
    if only_dense is not None and layers is not None and (not isinstance(only_dense, (list, tuple)) or any(
            type(i) is not int or not 0 <= i < layers for i in only_dense)):
        refuse("mlp_only_layers", f"must list layer numbers 0..{layers - 1}")


def context_length(config) -> int | None:
    """The longest text the model takes, when its config says."""
    text = config.get_text_config()
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(text, name, None)
        if type(value) is int and value > 0:
            return value
    return None


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' warnings about a config (printed, not raised) are not the plan's output."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message, and of its cause's (huggingface_hub's strict
    dataclass errors say which check failed in the first and why in the cause)."""
    lines = [str(x).strip().splitlines()[0] for x in (e, e.__cause__) if x is not None and str(x).strip()]
    return ": ".join(lines).replace(":: ", ": ")[:240] if lines else type(e).__name__


# --- the model's shapes ------------------------------------------------------------------------

def shapes(name: str, config, components: str | None = None) -> Shapes:
    """Parameter counts (total and active) and neurons by component kind, from the meta model's
    modules: no forward runs (a forward on the meta device fails in some experts' kernels, and
    a plan needs only shapes)."""
    from . import architectures
    kinds = architectures.resolve_components(components)
    meta = _meta_model(config)
    embed = meta.get_input_embeddings().weight
    head = meta.get_output_embeddings().weight
    # A meta model built from a config does not tie its head (transformers ties at load): the
    # config says whether the loaded model holds one matrix or two.
    tied = head is embed or bool(getattr(config.get_text_config(), "tie_word_embeddings", False))
    total = sum(p.numel() for p in meta.parameters()) - (head.numel() if tied and head is not embed else 0)
    outside_body = embed.numel() + (0 if tied else head.numel())
    counted = _count(meta, config, kinds)
    active = total - counted.idle_experts
    text = config.get_text_config()
    return Shapes(name, config.model_type, total, total - outside_body, head.numel(), head.shape[0],
                  int(getattr(text, "num_hidden_layers", 0) or 0), counted.neurons, meta,
                  int(getattr(text, "hidden_size", 0) or 0), active, active - outside_body, context_length(config),
                  counted.moe, tuple(counted.uncounted))


def _meta_model(config):
    """The model on the meta device, buffers and every tensor made while building it included:
    GPT-Neo, GPT-BigCode and GPT-1 build a context x context causal mask, which a long context
    would otherwise allocate (65,536 positions: 4 GiB)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    with _quiet_transformers(), init_empty_weights(include_buffers=True), torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        except Exception as e:  # noqa: BLE001 - a config transformers cannot build a model from, whatever the reason
            raise LesionError(f"a model of type {config.model_type!r} cannot be built from this config by "
                              f"transformers ({_first_line(e)}): fix the config.json") from None


@dataclass
class _Counted:
    neurons: dict[str, int]
    idle_experts: int  # parameters of the routed experts a token does not run, summed over MoE layers
    moe: dict | None
    uncounted: list[str]


def _count(meta, config, kinds: set[str]) -> _Counted:
    """Neurons by kind from the blocks' leaf modules (a neuron is one output channel: a linear
    layer's out_features, a norm's width, an activation's width is its MLP's down projection's
    in_features; a per-head q/k norm emits its projection's width), and the mixture of experts:
    each routed expert's gate, up and act (its intermediate width each) and down (the residual
    width), the router's logits (one per expert) and the MoE block's output channels."""
    import torch

    from . import architectures
    blocks = architectures.block_prefix(meta)
    modules = dict(meta.named_modules())
    text = config.get_text_config()
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    experts = {n: m for n, m in modules.items() if n.startswith(blocks + ".") and n.rsplit(".", 1)[-1] == "experts"}
    neurons: dict[str, int] = {}
    breakdown = {"routed_experts": 0, "shared_experts": 0, "router": 0, "block_output": 0}
    uncounted: list[str] = []

    def add(kind: str, count: int, part: str | None = None) -> None:
        if kind in kinds and count:
            neurons[kind] = neurons.get(kind, 0) + count
            if part is not None:
                breakdown[part] += count

    fused = {}
    for name, module in experts.items():
        if isinstance(module, torch.nn.ModuleList):
            continue
        count = _fused_experts(name, module, hidden)
        if count is None:
            uncounted.append(name)
            continue
        fused[name] = count
        per, intermediate = count
        for kind in ("gate", "up", "act"):
            add(kind, per * intermediate, "routed_experts")
        add("down", per * hidden, "routed_experts")
        add("expert", per)  # each expert as a unit (``unit="expert"``)
    for name, module in modules.items():
        if next(module.children(), None) is not None or not name.startswith(blocks + "."):
            continue
        if isinstance(module, (torch.nn.Dropout, torch.nn.Identity)) or name in fused or _under(name, fused):
            continue
        part = _moe_part(name, experts)
        kind = "router" if part == "router" else architectures.kind_of(name, module)
        if kind not in kinds:
            continue
        width = _leaf_width(name, module, kind, modules)
        if width is None:
            # A module with weights of no known layout is named in the plan; one without weights and
            # with no width of its own (Llama 4's qk_norm, run on q and on k) is not one site: no neurons.
            if next(module.parameters(recurse=False), None) is not None:
                uncounted.append(name)
            continue
        add(kind, width, part)
    moe_blocks = {n.rpartition(".")[0]: modules[n.rpartition(".")[0]] for n in experts}
    for _ in moe_blocks:
        add("moe", hidden, "block_output")
    moe = _moe_summary(meta, text, experts, moe_blocks, breakdown, blocks) if experts else None
    return _Counted(neurons, moe.pop("idle_parameters") if moe else 0, moe, uncounted)


def _under(name: str, prefixes) -> bool:
    return any(name.startswith(p + ".") for p in prefixes)


def _moe_part(name: str, experts: dict) -> str | None:
    """Which part of a mixture of experts a leaf module belongs to, if any."""
    if _under(name, experts):
        return "routed_experts"
    parent, _, leaf = name.rpartition(".")
    if any(parent == e.rpartition(".")[0] for e in experts):  # a direct child of an MoE block
        return "shared_experts" if leaf.startswith("shared_expert") else "router"
    if any(re.search(r"\.shared_experts?\.", name) and name.startswith(e.rpartition(".")[0] + ".") for e in experts):
        return "shared_experts"
    return None


def _fused_experts(name: str, module, hidden: int) -> tuple[int, int] | None:
    """(experts, intermediate width) of experts held as 3-D parameters (experts first), from the
    down projection's size: experts x hidden x intermediate, whichever way it is laid out."""
    from . import architectures
    params = dict(module.named_parameters(recurse=False))
    stacked = [p for p in params.values() if p.dim() == 3]
    if not stacked or hidden < 1:
        return None
    count = stacked[0].shape[0]
    down = [p for n, p in params.items() if p.dim() == 3 and architectures.kind_of(f"{name}.{n}", module) == "down"]
    if len(down) != 1 or any(p.shape[0] != count for p in stacked) or down[0].numel() % (count * hidden):
        return None
    return count, down[0].numel() // (count * hidden)


def _leaf_width(name: str, module, kind: str, modules: dict) -> int | None:
    """Output channels of a leaf module, from its shapes."""
    from . import architectures
    if kind == "norm":  # a per-head q/k norm emits heads x head_dim: its projection's width
        projection = modules.get(re.sub(r"(q|k)_norm$", r"\1_proj", name))
        if projection is not None and _out_width(projection):
            return _out_width(projection)
    if kind == "act" and next(module.parameters(recurse=False), None) is None:
        parent = name.rpartition(".")[0]
        downs = [_in_width(m) for n, m in modules[parent].named_children()
                 if architectures.kind_of(f"{parent}.{n}", m) == "down"]
        return downs[0] if len(downs) == 1 else None
    return _out_width(module)


def _out_width(module) -> int | None:
    import torch
    for attr in ("out_features", "nf"):  # nn.Linear and its subclasses; GPT-2's Conv1D
        value = getattr(module, attr, None)
        if type(value) is int:
            return value
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, (tuple, list)) and shape:
        return math.prod(shape)
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() in (1, 2):
        return int(weight.shape[0])
    return None


def _in_width(module) -> int | None:
    for attr in ("in_features", "nx"):
        value = getattr(module, attr, None)
        if type(value) is int:
            return value
    return None


def _moe_summary(meta, text, experts: dict, moe_blocks: dict, breakdown: dict, blocks: str) -> dict:
    """Counts of a mixture of experts: layers with and without experts, experts per layer and per
    token, and its parameters: routed experts (all, and those a token runs), shared experts, routers."""
    import torch
    top_k = next((getattr(text, n) for n in TOP_K_FIELDS if type(getattr(text, n, None)) is int), None)
    if top_k is None:
        raise LesionError(f"a model of type {text.model_type!r} has experts but its config names no number of "
                          f"experts per token ({', '.join(TOP_K_FIELDS)}): a plan cannot count its active parameters")
    routed = idle = shared = router = 0
    per_layer = set()
    for module in experts.values():
        count = len(module) if isinstance(module, torch.nn.ModuleList) else next(
            (p.shape[0] for p in module.parameters(recurse=False) if p.dim() == 3), 0)
        if not count:
            continue
        params = sum(p.numel() for p in module.parameters())
        per_layer.add(count)
        routed += params
        idle += params * (count - min(top_k, count)) // count
    for block in moe_blocks.values():
        for child_name, child in block.named_children():
            if child_name == "experts":
                continue
            params = sum(p.numel() for p in child.parameters())
            if child_name.startswith("shared_expert"):
                shared += params
            else:
                router += params
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    shared_count = getattr(text, "n_shared_experts", None)
    if type(shared_count) is not int:  # one shared expert module per block (qwen2_moe, llama4), or none
        shared_count = sum(n in ("shared_expert", "shared_experts") for n, _ in next(iter(moe_blocks.values()))
                           .named_children())
    return {
        "moe_layers": len(moe_blocks), "dense_layers": layers - len(moe_blocks),
        "experts": sorted(per_layer)[0] if len(per_layer) == 1 else sorted(per_layer),
        "experts_per_token": top_k,
        "shared_experts": shared_count,
        "parameters": {"routed_experts": routed, "routed_experts_active": routed - idle,
                       "shared_experts": shared, "routers": router},
        "neurons": dict(breakdown),
        "idle_parameters": idle,
    }


# --- the plan ----------------------------------------------------------------------------------

def plan_study(model: str | None = None, config: str | None = None, components: str | None = None,
               **options) -> dict:
    """The plan of a study of ``model`` (or of a ``config`` file): the options are checked
    first, then the config is read and checked, then memory, placement and time are planned
    (:func:`make_plan` takes the options)."""
    if model is not None and config is not None:
        raise ParameterError("config", "cannot be given with `model`: pass one")
    check_options(**options)
    from .architectures import resolve_components
    resolve_components(components)  # before the config is read
    name, built = read_config(model, config)
    return make_plan(shapes(name, built, components), **options)


def check_options(*, tokens: int = 49, samples: int | str = 100, gpus: int = 0, gpu_memory: float | None = None,
                  dtype: str = "bfloat16", stage2_rows: int = 100, search_rows: int = 1000, ranks: int | None = None,
                  gpu_tflops: float | None = None) -> None:
    """Every option of a plan, before any config is read: integers that are integers, within
    bounds; GPU memory and throughput positive and finite; the GPU options (memory, throughput,
    ranks) only with ``gpus``: without GPUs the plan is for this machine's CPU, which more
    processes would share, not multiply."""
    _integer("tokens", tokens, 1, MAX_TOKENS, ": the Bookends text is 49 tokens on SmolLM2")
    if samples != "auto":
        _integer("samples", samples, 1, MAX_SAMPLES, " (or 'auto'): the paper uses 100")
    _integer("gpus", gpus, 0, MAX_GPUS, " (0 plans for this CPU only)")
    if gpu_memory is not None:
        _positive("gpu_memory", gpu_memory, MAX_GPU_GIB, ": the memory of one GPU in GiB, e.g. 80")
    if dtype not in BYTES:
        raise ParameterError("dtype", f"must be one of {', '.join(BYTES)} (got {dtype!r})")
    _integer("stage2_rows", stage2_rows, 0, MAX_ROWS, "")
    _integer("search_rows", search_rows, 0, MAX_ROWS, "")
    if ranks is not None:
        _integer("ranks", ranks, 1, MAX_GPUS, ": leave it out for the copies the GPUs hold")
    if gpu_tflops is not None:
        _positive("gpu_tflops", gpu_tflops, MAX_GPU_TFLOPS, f": leave it out for the default, {DEFAULT_GPU_TFLOPS:g}")
    for name, value in (("gpu_memory", gpu_memory), ("gpu_tflops", gpu_tflops), ("ranks", ranks)):
        if value is not None and not gpus:
            raise ParameterError(name, "is for a plan on GPUs: give `gpus` too (without GPUs the plan is for "
                                       "this machine's CPU, whose cores more processes share, not multiply)")


def _integer(name: str, value, low: int, high: int, hint: str) -> None:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not low <= value <= high:
        raise ParameterError(name, f"must be an integer from {low:,} to {high:,} (got {value!r}){hint}")


def _positive(name: str, value, high: float, hint: str) -> None:
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 < value <= high:
        raise ParameterError(name, f"must be a finite number > 0 and at most {high:g} (got {value!r}){hint}")


def make_plan(s: Shapes, *, tokens: int = 49, samples: int | str = 100, gpus: int = 0, gpu_memory: float | None = None,
              dtype: str = "bfloat16", stage2_rows: int = 100, search_rows: int = 1000, ranks: int | None = None,
              gpu_tflops: float | None = None) -> dict:
    """Memory, placement and time of a study; ``samples`` K or "auto" (planned at its cap,
    100); ``ranks`` data-parallel copies (default: as many as the GPUs hold, else 1);
    ``gpu_tflops`` the assumed throughput of one copy (default DEFAULT_GPU_TFLOPS); ``gpu_memory``
    GiB per GPU (default DEFAULT_GPU_GIB). Where one copy does not fit the GPUs, no GPU time is planned."""
    check_options(tokens=tokens, samples=samples, gpus=gpus, gpu_memory=gpu_memory, dtype=dtype,
                  stage2_rows=stage2_rows, search_rows=search_rows, ranks=ranks, gpu_tflops=gpu_tflops)
    if s.context is not None and tokens > s.context:
        raise ParameterError("tokens", f"must be at most the model's context, {s.context:,} tokens "
                                       f"(max_position_embeddings; got {tokens:,}): the text cannot fit")
    adaptive = samples == "auto"
    samples = 100 if adaptive else int(samples)
    n = sum(s.neurons.values())
    per_set = tokens * n * 4
    stage1_bytes = (5 if adaptive else 3) * per_set
    search_batch = max(1, min(64, LOGIT_BYTES // (4 * s.vocab * tokens)))
    rows_bytes = {"stage2": s.vocab * tokens * STAGE2_ROW_BATCH * 4, "search": s.vocab * tokens * search_batch * 4}
    active_body = s.active_body_parameters or s.body_parameters
    stage1_flops = 2 * active_body * tokens * samples
    row_flops = 2 * (active_body + s.head_parameters) * tokens
    plan = {
        "model": s.name, "model_type": s.model_type, "parameters": s.parameters,
        "active_parameters": s.active_parameters or s.parameters, "layers": s.layers, "context": s.context,
        "neurons": {"total": n, **dict(sorted(s.neurons.items()))},
        "tokens": tokens, "samples": "auto" if adaptive else samples,
        "memory_gib": {
            "weights": {d: round(s.parameters * b / GIB, 2) for d, b in BYTES.items()},
            "stage1_state": round(stage1_bytes / GIB, 3),
            "stage1_state_terms": f"{5 if adaptive else 3} x tokens x neurons x 4 B (clean, sums, pending"
                                  f"{', squares, pending squares' if adaptive else ''})",
            "masked_rows_stage2": round(rows_bytes["stage2"] / GIB, 3),
            "masked_rows_search": round(rows_bytes["search"] / GIB, 3),
            "rows_per_batch": {"stage2": STAGE2_ROW_BATCH, "search": search_batch},
        },
        "flops": {"stage1": stage1_flops, "masked_row": row_flops},
    }
    if s.moe is not None:
        plan["moe"] = s.moe
        plan["memory_gib"]["routed_experts"] = {d: round(s.moe["parameters"]["routed_experts"] * b / GIB, 2)
                                                for d, b in BYTES.items()}
    if s.uncounted:
        plan["uncounted_modules"] = list(s.uncounted)
    working = (stage1_bytes + max(rows_bytes.values())) / GIB
    copies = 1
    if gpus:
        placement = device_map(s, gpus, DEFAULT_GPU_GIB if gpu_memory is None else gpu_memory, dtype, working * 1.1)
        # The fewest GPUs one copy needs; the others hold more data-parallel copies.
        copies = gpus // placement["used_gpus"] if placement["fits"] else 0
        plan["device_map"] = placement
        plan["data_parallel_ranks"] = copies
        if ranks is not None and ranks > copies:
            raise ParameterError("ranks", f"must be at most the copies the GPUs hold ({copies}; got {ranks}): "
                                          "give more `gpus` (or `gpu_memory`) or fewer ranks")
    ranks = ranks or copies or 1
    cpu = CALIBRATION
    plan["time_s"] = {
        "cpu_this_machine": _times(stage1_flops, row_flops, stage2_rows, search_rows, ranks if not gpus else 1,
                                   cpu["stage1_s_per_flop"] * width_factor(s.hidden, "stage1"),
                                   cpu["row_s_per_flop"] * width_factor(s.hidden, "row")),
        "calibration": cpu["source"],
    }
    if gpus and copies:
        tflops = DEFAULT_GPU_TFLOPS if gpu_tflops is None else gpu_tflops
        spf = 1.0 / (tflops * 1e12)
        plan["time_s"]["gpu_assumed"] = _times(stage1_flops, row_flops, stage2_rows, search_rows, ranks, spf, spf)
        plan["time_s"]["gpu_assumption"] = (f"{tflops:g} TFLOPS effective per model copy (assumed; a 135M "
                                            "model measured about 17 on one H100, docs/plan.md)")
    plan["time_s"]["rows"] = {"stage2": stage2_rows, "search": search_rows, "ranks": ranks}
    return plan


def device_map(s: Shapes, gpus: int, gpu_gib: float, dtype: str, reserve_gib: float) -> dict:
    """accelerate's placement of one copy of the model on ``gpus`` GPUs of ``gpu_gib`` each,
    keeping ``reserve_gib`` per GPU free for Stage 1's state and a batch of masked rows. One
    copy never spreads over more GPUs than it has blocks plus two (embedding, head), so at most
    that many are placed: a million GPUs cost what a hundred do."""
    import torch
    from accelerate import infer_auto_device_map
    room = gpu_gib - reserve_gib
    if room <= 0:
        return {"fits": False, "gpus": gpus, "why": f"the working memory ({reserve_gib:.1f} GiB per GPU) "
                                                      f"exceeds {gpu_gib:g} GiB"}
    placed_gpus = min(gpus, s.layers + 2)
    memory: dict = {i: int(room * GIB) for i in range(placed_gpus)}
    memory["cpu"] = 10 ** 15  # what does not fit lands on the CPU, which says it does not fit
    # accelerate warns that the planned GPUs are not on this machine: planning for them is the point
    quiet = logging.getLogger("accelerate.utils.modeling")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        placed = infer_auto_device_map(s.model, max_memory=memory, dtype=getattr(torch, dtype),
                                       no_split_module_classes=getattr(s.model, "_no_split_modules", None) or [])
    finally:
        quiet.setLevel(level)
    per_device: dict[str, int] = {}
    for module, device in placed.items():
        count = sum(p.numel() for p in s.model.get_submodule(module).parameters()) if module else s.parameters
        per_device[str(device)] = per_device.get(str(device), 0) + count
    on_gpu = sum(v for k, v in per_device.items() if k not in ("cpu", "disk"))
    blocks = {str(d): sum(1 for m, dd in placed.items() if dd == d and m.split(".")[-1].isdigit())
              for d in set(placed.values())}
    if "" in placed:  # the whole model on one device: accelerate names no block
        blocks = {str(placed[""]): s.layers}
    return {"fits": on_gpu == s.parameters, "gpus": gpus, "gpu_gib": gpu_gib, "reserve_gib": round(reserve_gib, 2),
            "weights_gib": {d: round(n * BYTES[dtype] / GIB, 2) for d, n in sorted(per_device.items())},
            "blocks": dict(sorted(blocks.items())),
            "used_gpus": max(1, len([d for d in per_device if d not in ("cpu", "disk")]))}


def width_factor(hidden: int, part: str) -> float:
    """How much faster per FLOP than SmolLM2's width a model of residual width ``hidden`` runs."""
    low, high = CALIBRATED_WIDTHS
    if hidden <= 0:
        return 1.0
    return (min(max(hidden, low), high) / low) ** WIDTH_EXPONENT[part]


def _times(stage1_flops, row_flops, stage2_rows, search_rows, ranks, s1, row) -> dict:
    return {"stage1": stage1_flops * s1 / ranks, "per_masked_row": row_flops * row,
            "stage2": stage2_rows * row_flops * row / ranks, "search": search_rows * row_flops * row / ranks}


def human_bytes(gib: float) -> str:
    return f"{gib * 1024:.0f} MiB" if gib < 1 else f"{gib:.1f} GiB"


def human_seconds(s: float) -> str:
    if s < 0.1:
        return f"{s * 1000:.1f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"

"""A model's config.json, read and checked before any weight is: sizes, nesting and the relations
between fields, for a plan and for every load."""
from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

from ..errors import ConfigError, ParameterError

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
    from ..model.model_cache import _gguf_cache
    from ..model.aliases import resolve
    from ..runtime.options import DEFAULT_MODEL
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
    from ..model.hub import refuse_remote_code
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

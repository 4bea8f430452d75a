r"""Streaming generation with the compressive memory, in constant memory for any prompt length.

  python -m infini_jax.generate --checkpoint=WORKDIR[/STEP] --prompt="..." \
      [--prompt_file=F] [--max_new_tokens=64] [--temperature=0] [--top_p=1] [--seed=0] \
      [--add_bos]

The prompt's complete segments stream through the evaluation engine (the segment step, memory
carried); the rest of the prompt and every new token go through `model.decode_step`: a KV cache
inside the current segment, written into the memory when the segment is full. Greedy
(temperature 0), temperature, or nucleus (top-p) sampling from explicit keys.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from infini_jax import cli, model, storage
from infini_jax.config import validate
from infini_jax.errors import Error
from infini_jax.eval.engine import Engine
from infini_jax.model.config import ModelConfig
from infini_jax.training import loading


def sample_token(logits: jax.Array, key: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """`logits` `[batch, vocab]` → token ids `[batch]`: argmax when temperature is 0, else a
    draw from softmax(logits / T) restricted to the smallest set of mass ≥ top_p."""
    if temperature <= 0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    logits = logits / temperature
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, -1)
        probs = jax.nn.softmax(sorted_logits, -1)
        before = jnp.cumsum(probs, -1) - probs  # mass of strictly better tokens
        sorted_logits = jnp.where(before < top_p, sorted_logits, -jnp.inf)
        pick = jax.random.categorical(key, sorted_logits, axis=-1)
        return jnp.take_along_axis(order, pick[:, None], -1)[:, 0].astype(jnp.int32)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 6, 7), donate_argnums=(2, 3))
def _step(model_cfg, params, memory, cache, token, key, temperature, top_p):
    logits, memory, cache = model.decode_step(model_cfg, params, token, memory, cache)
    return sample_token(logits, key, temperature, top_p), logits, memory, cache


def generate(
    model_cfg: ModelConfig,
    params,
    prompt: np.ndarray,
    *,
    max_new_tokens: int,
    seed: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    on_token: Callable[[np.ndarray], bool | None] | None = None,
) -> np.ndarray:
    """Continues `prompt` `[batch, p]` (p ≥ 1, equal lengths) by up to `max_new_tokens` tokens.

    Returns `[batch, n]` int32, `n = max_new_tokens` unless stopped. `on_token(ids [batch])` is
    called as each token is produced (streaming); returning True stops generation there.
    Device memory: the memory, one segment's cache, one token.
    """
    prompt = np.asarray(prompt, np.int32)
    b, p = prompt.shape
    if p < 1 or max_new_tokens < 1:
        raise ValueError("generate needs a prompt of at least 1 token and max_new_tokens >= 1")
    memory = None
    start = 0
    if model_cfg.attention != "full":
        # Whole segments before the last prompt token: streamed (local needs nothing from them).
        start = (p - 1) // model_cfg.segment_len * model_cfg.segment_len
        if model_cfg.attention == "infini":
            memory = (
                Engine(model_cfg, params).memory_after(prompt[:, :start])
                if start
                else model.init_memory(model_cfg, b)
            )
    cache = model.init_cache(model_cfg, b, p + max_new_tokens)
    key = jax.random.fold_in(jax.random.key(seed), 0)  # draws the first new token
    token = None
    for t in range(start, p):  # the rest of the prompt, one token at a time
        token, _, memory, cache = _step(
            model_cfg, params, memory, cache, jnp.asarray(prompt[:, t]), key, temperature, top_p
        )
    out = []
    for i in range(max_new_tokens):
        out.append(np.asarray(token))
        if on_token and on_token(out[-1]):
            break
        if i + 1 < max_new_tokens:
            key = jax.random.fold_in(jax.random.key(seed), i + 1)
            token, _, memory, cache = _step(
                model_cfg, params, memory, cache, token, key, temperature, top_p
            )
    return np.stack(out, axis=1)


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_string("checkpoint", None, "WORKDIR or WORKDIR/STEP.")
    flags.DEFINE_string("prompt", "", "Prompt text.")
    flags.DEFINE_string("prompt_file", None, "Read the prompt from this file.")
    flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate.", lower_bound=1)
    flags.DEFINE_float("temperature", 0.0, "0 = greedy.", lower_bound=0.0)
    flags.DEFINE_float(
        "top_p", 1.0, "Nucleus sampling mass in (0, 1] (1 = off).", lower_bound=0.0, upper_bound=1.0
    )
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_bool("add_bos", False, "Start the prompt with BOS (imported Llama models).")

    def run(_):
        f = flags.FLAGS
        cli.require("checkpoint")
        if f.top_p == 0:
            raise Error("--top_p=0 keeps no token: use a mass in (0, 1], or --temperature=0")
        config, _, params = loading.load_params(f.checkpoint)
        model_cfg = validate(config)
        tok = loading.load_tokenizer(f.checkpoint, config)
        if f.prompt_file:
            try:
                text = storage.read_text(f.prompt_file)
            except (OSError, UnicodeDecodeError) as e:
                reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:160]
                raise Error(f"--prompt_file={f.prompt_file}: {reason}") from None
        else:
            text = f.prompt
        ids = tok.encode(text)
        if not ids:
            raise Error("the prompt is empty; pass --prompt or --prompt_file")
        if f.add_bos:
            if tok.bos_id is None:
                raise Error(f"--add_bos: tokenizer {tok.path} has no BOS token")
            ids = [tok.bos_id, *ids]
        produced: list[int] = []
        shown = [""]

        def show(token):  # decode the whole continuation so word boundaries come out right
            produced.append(int(token[0]))
            text = tok.decode(produced)
            print(text[len(shown[0]) :], end="", flush=True)
            shown[0] = text

        generate(
            model_cfg,
            params,
            np.asarray([ids]),
            max_new_tokens=f.max_new_tokens,
            seed=f.seed,
            temperature=f.temperature,
            top_p=f.top_p,
            on_token=show,
        )
        print()

    cli.run(run, argv)


if __name__ == "__main__":
    main()

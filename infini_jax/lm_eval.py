r"""Any lm-evaluation-harness task on any infini_jax checkpoint, Infini models included.

  pip install -e ".[lm_eval]"
  python -m infini_jax.lm_eval --checkpoint=WORKDIR[/STEP] --tasks=hellaswag,lambada_openai \
      [--limit=N] [--num_fewshot=K] [--include_path=DIR] [--output=results.json]
      [--metadata=JSON] [--samples=requests.json]

RULER (lm-eval's `ruler` tasks) runs offline: its tasks build their own data, sized with the
tokenizer named in `--metadata` ("tokenizer"), which defaults to the workdir's
`hf_tokenizer/` (train writes it); e.g. --metadata='{"max_seq_lengths": [4096, 16384]}'.

`InfiniLM` is an lm-eval model (`lm_eval.api.model.TemplateLM`) over the streaming evaluation
engine, so every request runs through the same per-segment model step as training and
`evaluate`, with the memory carried over contexts of any length:
- `loglikelihood`: context + continuation tokenized as lm-eval does (the whole string, split
  where the context's tokens end); an empty context is the prefix token.
- `loglikelihood_rolling`: the prefix token + the document, every token scored once. Infini and
  local models stream the whole document; "full" models score windows of `data.seq_len`
  tokens (no memory), as the harness's Hugging Face model does at its max length.
- `generate_until`: greedy (or sampled, from `gen_kwargs`) decoding with `infini_jax.generate`
  until a stop string or `max_gen_toks`.
The prefix token is EOS (`--prefix=eos`: our training separates documents with EOS) or BOS
(`--prefix=bos`, for imported Llama checkpoints, which start documents with BOS).
"""

import contextlib
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator

import numpy as np
from absl import flags

from infini_jax import cli, storage
from infini_jax.config import validate
from infini_jax.errors import Error
from infini_jax.eval.engine import Engine
from infini_jax.generate import generate
from infini_jax.training import loading

try:
    from lm_eval import evaluator
    from lm_eval.api.model import TemplateLM
    from lm_eval.tasks import TaskManager
except ImportError:  # the optional extra; main() says how to install it
    evaluator = TaskManager = None
    TemplateLM = object


class InfiniLM(TemplateLM):
    """An infini_jax checkpoint as an lm-eval model.

    Args:
      checkpoint_path: WORKDIR or WORKDIR/STEP.
      batch_size: samples per streamed batch (one compile per batch shape).
      prefix: "eos" or "bos": the token before an empty context and before rolling documents.
      max_gen_toks: `generate_until`'s default budget of new tokens.
    """

    def __init__(
        self,
        checkpoint_path: str,
        batch_size: int = 8,
        prefix: str = "eos",
        max_gen_toks: int = 256,
    ):
        super().__init__()
        config, self.step, self.params = loading.load_params(checkpoint_path)
        self.model_cfg = validate(config)
        self.tok = loading.load_tokenizer(checkpoint_path, config)
        if prefix == "bos" and self.tok.bos_id is None:
            raise Error(f"--prefix=bos: tokenizer {self.tok.path} has no BOS token; use eos")
        self._prefix = self.tok.bos_id if prefix == "bos" else self.tok.eos_id
        full = self.model_cfg.attention == "full"
        self.engine = Engine(
            self.model_cfg, self.params, full_context=config.data.seq_len if full else 0
        )
        self.batch_size = batch_size
        self.max_gen_toks = max_gen_toks
        self.request_seconds: list[float] = []  # wall time of each generate_until request

    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self._prefix

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.tok.encode(string)

    def score(self, samples: list[list[int]], first: list[int]) -> list[tuple[float, bool]]:
        """Per sample: (sum of log p(token t) for t >= first[i], all of them the argmax)."""
        order = sorted(range(len(samples)), key=lambda i: -len(samples[i]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(samples)
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            batch = [np.asarray(samples[i], np.int32) for i in idx]
            scored = [np.arange(first[i] - 1, len(samples[i]) - 1) for i in idx]
            pad = self.batch_size - len(idx)  # one batch shape: one compile
            res = self.engine.run(batch + batch[:1] * pad, scored + scored[:1] * pad)
            for r, i in enumerate(idx):
                targets = np.asarray(samples[i][first[i] :])
                out[i] = (float(res.logprob[r].sum()), bool(np.all(res.argmax[r] == targets)))
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        samples = [list(ctx) + list(cont) for _, ctx, cont in requests]
        first = [len(ctx) for _, ctx, _ in requests]
        return self.score(samples, first)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        samples = [[self._prefix, *self.tok.encode(req.args[0])] for req in requests]
        return [logp for logp, _ in self.score(samples, [1] * len(samples))]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            start = time.perf_counter()
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ids = self.tok.encode(context) or [self._prefix]
            produced: list[int] = []

            def stop(token, produced=produced, until=until):
                produced.append(int(token[0]))
                if int(token[0]) == self.tok.eos_id:
                    return True
                return any(s in self.tok.decode(produced) for s in until)

            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0
            generate(
                self.model_cfg,
                self.params,
                np.asarray([ids]),
                max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
                temperature=temperature,
                on_token=stop,
            )
            text = self.tok.decode([t for t in produced if t != self.tok.eos_id])
            for s in until:
                text = text.split(s)[0]
            out.append(text)
            self.request_seconds.append(time.perf_counter() - start)
        return out


def task_metadata(text: str, checkpoint_path: str) -> dict:
    """The `--metadata` JSON object, with `tokenizer` (which RULER's tasks size their prompts
    with) filled in: the workdir's `hf_tokenizer/` that training writes, or, for a workdir
    from before it existed, an export of its tokenizer to a temporary directory."""
    try:
        metadata = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise Error(f"--metadata is not a JSON object ({e})") from None
    if not isinstance(metadata, dict):
        raise Error(f"--metadata must be a JSON object, not {type(metadata).__name__}")
    if "tokenizer" not in metadata and "pretrained" not in metadata:
        metadata["tokenizer"] = hf_tokenizer_dir(checkpoint_path)
    return metadata


def hf_tokenizer_dir(checkpoint_path: str) -> str:
    """A directory `AutoTokenizer.from_pretrained` loads: the workdir's, or a fresh export."""
    from infini_jax.interop.tokenizer import export_tokenizer

    workdir, _ = loading.resolve(checkpoint_path)
    saved = storage.join(workdir, loading.HF_TOKENIZER)
    if storage.isfile(storage.join(saved, "tokenizer_config.json")) and not storage.is_remote(
        saved
    ):
        return saved
    config = loading.load_config(checkpoint_path)
    out = tempfile.mkdtemp(prefix="infini_jax_tokenizer_")
    export_tokenizer(loading.load_tokenizer(checkpoint_path, config), out)
    return out


def task_names(spec: str, manager) -> list[str]:
    """The comma-separated task names of `spec`, each one `manager` knows (else one line)."""
    names = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown or not names:
        raise Error(f"--tasks: unknown lm-eval task(s) {unknown}; see lm-eval's task list")
    return names


# Where a failure is lm-eval's (or its data libraries'), not this bridge's: such a failure is
# one line; any other keeps its traceback (a bug of ours must stay visible).
LIBRARIES = ("/lm_eval/", "/datasets/", "/huggingface_hub/", "/evaluate/", "/wonderwords/")


@contextlib.contextmanager
def library_failures(names: list[str]) -> Iterator[None]:
    """Turns an unreachable Hugging Face Hub (a task whose data is not cached) and a crash
    inside lm-eval's own code (e.g. a metric dividing by zero) into one `Error` line."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - sorted below: ours re-raised
        frames = traceback.extract_tb(e.__traceback__)
        where = frames[-1] if frames else None
        text = " ".join(str(e).split())[:300]
        if isinstance(e, ConnectionError) or "huggingface.co" in text or "on the Hub" in text:
            raise Error(
                f"task(s) {names} need data from the Hugging Face Hub, which cannot be reached "
                f"({text}); run once where it can (the datasets cache keeps it), or pick tasks "
                "whose data is local (docs/evaluation.md lists them)"
            ) from None
        if where is not None and any(lib in where.filename for lib in LIBRARIES):
            site = f"{where.filename.rsplit('/site-packages/', 1)[-1]}:{where.lineno}"
            why = "the task cannot score this model at these settings"
            if isinstance(e, ZeroDivisionError):  # an aggregate over no samples
                why = (
                    "a metric had no sample to average: RULER builds none at a length its text "
                    "does not fit with this tokenizer (e.g. ruler_cwe at 4K); raise "
                    "max_seq_lengths in --metadata"
                )
            raise Error(
                f"lm-eval failed inside task(s) {names}: {type(e).__name__}: {text} (at "
                f"{site}); {why}"
            ) from None
        raise


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_string("checkpoint", None, "WORKDIR or WORKDIR/STEP.")
    flags.DEFINE_string("tasks", None, "Comma-separated lm-eval task names.")
    flags.DEFINE_string("include_path", None, "A directory of extra task YAML files.")
    flags.DEFINE_integer(
        "limit", None, "Evaluate only this many documents per task.", lower_bound=1
    )
    flags.DEFINE_integer(
        "num_fewshot", None, "Few-shot examples (default: the task's).", lower_bound=0
    )
    flags.DEFINE_integer("batch_size", 8, "Samples per streamed batch.", lower_bound=1)
    flags.DEFINE_enum("prefix", "eos", ("eos", "bos"), "Token before empty contexts.")
    flags.DEFINE_string("output", None, "Write lm-eval's results (JSON) here.")
    flags.DEFINE_string(
        "metadata",
        "",
        'Task metadata (JSON), e.g. \'{"max_seq_lengths": [4096]}\' for RULER; "tokenizer" '
        "defaults to the checkpoint's Hugging Face tokenizer directory.",
    )
    flags.DEFINE_string("samples", None, "Write every request and its response (JSON) here.")

    def run(_):
        f = flags.FLAGS
        if evaluator is None:
            raise Error('lm-eval is not installed: pip install -e ".[lm_eval]"')
        cli.require("checkpoint", "tasks")
        for flag in ("output", "samples"):  # before any model loads or task downloads
            if f[flag].value:
                cli.writable(f[flag].value, flag, directory=False)
        metadata = task_metadata(f.metadata, f.checkpoint)
        manager = TaskManager(include_path=f.include_path, metadata=metadata)
        names = task_names(f.tasks, manager)
        lm = InfiniLM(f.checkpoint, f.batch_size, f.prefix)
        with library_failures(names):
            results = evaluator.simple_evaluate(
                model=lm,
                tasks=names,
                num_fewshot=f.num_fewshot,
                limit=f.limit,
                task_manager=manager,
                log_samples=bool(f.samples),
            )
        if lm.request_seconds:
            n, total = len(lm.request_seconds), sum(lm.request_seconds)
            print(f"timing: {n} generate requests, {total / n:.2f} s each", file=sys.stderr)
        for task, metrics in results["results"].items():
            shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
            print(task, json.dumps(shown))
        if f.samples:  # per request: its arguments and the model's response
            text = json.dumps(results.get("samples", {}), indent=1, default=str)
            storage.write_text(f.samples, text)
            print(f"wrote {f.samples}", file=sys.stderr)
        if f.output:
            text = json.dumps(results["results"], indent=2, default=str)
            storage.write_text(f.output, text)
            print(f"wrote {f.output}", file=sys.stderr)

    cli.run(run, argv)


if __name__ == "__main__":
    main()

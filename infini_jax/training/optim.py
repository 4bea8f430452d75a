"""AdamW with parameter groups and warmup + cosine schedules (optax).

Groups: `balance` (the Infini-attention balance factors: their own peak LR and weight decay,
as the seed study needs), `no_decay` (biases, i.e. the memory's write-strength and decay
biases, which set where those gates sit, and parameters whose path contains one of
`optimizer.no_weight_decay`, e.g. norm scales), and `decay` (everything else, the gates'
projections included). All groups share
the schedule shape: linear warmup to the group's peak, cosine decay to peak ×
(end_learning_rate / learning_rate). Gradients are clipped by global norm over all groups.
"""

from collections.abc import Callable

import jax
import optax

from infini_jax.sections import OptimizerConfig

GROUPS = ("decay", "no_decay", "balance")


def schedule(peak: float, o: OptimizerConfig, total_steps: int) -> optax.Schedule:
    end = peak * (o.end_learning_rate / o.learning_rate) if o.learning_rate > 0 else 0.0
    warmup = min(o.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end)


def param_groups(params, o: OptimizerConfig):
    """A tree like `params` of group names."""
    patterns = [p for p in o.no_weight_decay.split(",") if p]

    def label(path, _):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if name.endswith("balance"):
            return "balance"
        if name.endswith("bias") or any(p in name for p in patterns):
            return "no_decay"
        return "decay"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(
    o: OptimizerConfig, total_steps: int
) -> tuple[optax.GradientTransformation, dict[str, Callable]]:
    """Returns `(tx, schedules)`; `schedules["lr"]`, `schedules["gate_lr"]` map step → LR."""
    lr = schedule(o.learning_rate, o, total_steps)
    gate_lr = schedule(o.gate_learning_rate, o, total_steps)

    def adamw(rate, wd):
        return optax.adamw(rate, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=wd)

    tx = optax.chain(
        optax.clip_by_global_norm(o.clip_norm),
        optax.multi_transform(
            {
                "decay": adamw(lr, o.weight_decay),
                "no_decay": adamw(lr, 0.0),
                "balance": adamw(gate_lr, o.gate_weight_decay),
            },
            lambda params: param_groups(params, o),
        ),
    )
    return tx, {"lr": lr, "gate_lr": gate_lr}

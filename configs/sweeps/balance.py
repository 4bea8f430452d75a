r"""The balance-factor study: gate function × gate learning rate × memory update (12 runs).

python -m infini_jax.sweep --sweep=configs/sweeps/balance.py --workdir=/tmp/balance
python -m infini_jax.sweep summarize /tmp/balance --field=optimizer.gate_learning_rate
"""


def get_sweep() -> dict:
    return {
        "base": "configs/tiny.py:paper",  # Config file[:preset] every run starts from.
        "fixed": {"total_steps": 300},  # Overrides shared by every run.
        "grid": {  # Every combination is one run.
            "model.gate": ["sigmoid", "hard_sigmoid"],
            "optimizer.gate_learning_rate": [1.5e-4, 1e-3, 1e-2],
            "model.memory_update": ["linear", "delta"],
        },
    }

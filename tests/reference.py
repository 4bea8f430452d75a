"""An independent float64 NumPy reference of Infini-attention, written token by token.

Deliberately naive (explicit loops, complex-number RoPE) so that it shares no code or
vectorisation tricks with `infini_jax.ops`.
"""

import math

import numpy as np


def rope(x, theta):
    """x [T, D] float64, positions 0..T-1; pairs (i, i + D/2) rotate as complex numbers."""
    t_len, d = x.shape
    half = d // 2
    out = np.empty_like(x)
    for t in range(t_len):
        for i in range(half):
            angle = t * theta ** (-2.0 * i / d)
            c = complex(x[t, i], x[t, i + half]) * complex(math.cos(angle), math.sin(angle))
            out[t, i], out[t, i + half] = c.real, c.imag
    return out


def elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def feature(x, kind):
    """The memory's feature map of one vector: ELU+1, or SiLU then unit L2 norm."""
    if kind == "elu":
        return elu1(x)
    s = x / (1.0 + np.exp(-x))
    norm = math.sqrt(float(s @ s))
    return s / norm if norm > 0 else s


def gate_fn(b, gate):
    if gate == "sigmoid":
        return 1.0 / (1.0 + math.exp(-b))
    return min(1.0, max(0.0, 0.2 * b + 0.5))


def infini_reference(
    q,
    k,
    v,
    balance,
    *,
    segment_len,
    update="delta",
    gate="hard_sigmoid",
    rope_theta=10000.0,
    memory=None,
    mask=None,
    segment_ids=None,
    empty_memory="gate",
    features="elu",
    beta=None,
    decay=None,
):
    """Returns (out [B, T, H, D], (M [B, K, D, D], z [B, K, D], doc [B])) in float64.

    features: "elu" (read σ(q)M / σ(q)z) or "l2" (read q̂M). update: "linear", "delta" (one
    step from the state before the segment) or "exact_delta" (the delta rule token by token).
    beta: [B, T, K] write strength per token; decay: [B, segments, K] α per segment.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    bsz, t_len, n_heads, d = q.shape
    n_kv = k.shape[2]
    group = n_heads // n_kv
    mask = np.ones((bsz, t_len), bool) if mask is None else np.asarray(mask)
    ids = np.zeros((bsz, t_len), int) if segment_ids is None else np.asarray(segment_ids)
    if memory is None:
        mem_m = np.zeros((bsz, n_kv, d, d))
        mem_z = np.zeros((bsz, n_kv, d))
        doc = np.zeros(bsz, int)
    else:
        mem_m = np.array(memory[0], np.float64)
        mem_z = np.array(memory[1], np.float64)
        doc = np.array(memory[2], int)
    out = np.zeros_like(q)
    for bi in range(bsz):
        for lo in range(0, t_len, segment_len):
            seg = range(lo, lo + segment_len)
            for h in range(n_heads):
                kvh = h // group
                g = gate_fn(float(balance[h]), gate)
                qr = rope(q[bi, lo : lo + segment_len, h], rope_theta)
                kr = rope(k[bi, lo : lo + segment_len, kvh], rope_theta)
                for ti, t in enumerate(seg):
                    if not mask[bi, t]:
                        continue
                    keys = [
                        j
                        for j in range(ti + 1)
                        if mask[bi, lo + j] and ids[bi, lo + j] == ids[bi, t]
                    ]
                    scores = np.array([qr[ti] @ kr[j] / math.sqrt(d) for j in keys])
                    p = np.exp(scores - scores.max())
                    p /= p.sum()
                    a_dot = sum(pj * v[bi, lo + j, kvh] for pj, j in zip(p, keys, strict=True))
                    has = doc[bi] == ids[bi, t] and np.any(mem_z[bi, kvh] > 0)
                    if has:
                        sq = feature(q[bi, t, h], features)
                        a_mem = sq @ mem_m[bi, kvh]
                        if features == "elu":
                            a_mem = a_mem / (sq @ mem_z[bi, kvh])
                        out[bi, t, h] = g * a_mem + (1 - g) * a_dot
                    elif empty_memory == "gate":
                        out[bi, t, h] = (1 - g) * a_dot
                    else:
                        out[bi, t, h] = a_dot
            valid = [t for t in seg if mask[bi, t]]
            if not valid:
                continue
            last_doc = ids[bi, valid[-1]]
            if last_doc != doc[bi]:
                mem_m[bi] = 0.0
                mem_z[bi] = 0.0
                doc[bi] = last_doc
            for kvh in range(n_kv):
                if decay is not None:
                    alpha = float(decay[bi, lo // segment_len, kvh])
                    mem_m[bi, kvh] *= alpha
                    mem_z[bi, kvh] *= alpha
                m_old, z_old = mem_m[bi, kvh].copy(), mem_z[bi, kvh].copy()
                for t in valid:
                    if ids[bi, t] != last_doc:
                        continue
                    w = 1.0 if beta is None else float(beta[bi, t, kvh])
                    sk = feature(k[bi, t, kvh], features)
                    # the memory the delta term reads: before the segment, or right now
                    now = (mem_m[bi, kvh], mem_z[bi, kvh])
                    m_r, z_r = (m_old, z_old) if update == "delta" else now
                    val = v[bi, t, kvh].copy()
                    if update != "linear":
                        if features == "l2":
                            val -= sk @ m_r
                        elif sk @ z_r > 0:
                            val -= (sk @ m_r) / (sk @ z_r)
                    mem_m[bi, kvh] = mem_m[bi, kvh] + w * np.outer(sk, val)
                    mem_z[bi, kvh] = mem_z[bi, kvh] + w * (sk if features == "elu" else sk * sk)
    return out, (mem_m, mem_z, doc)

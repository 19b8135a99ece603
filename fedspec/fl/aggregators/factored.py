"""Spectral math on sums of low-rank products, without forming dense d_out × d_in matrices.

A sum ``M = Σ_j L_j R_j`` of products of thin factors is one product ``L R``
of stacked factors, ``L = [L_1 … L_k]`` (d_out × K) and ``R = [R_1; …; R_k]``
(K × d_in).  With thin QR ``L = Q_l T_l`` and ``Rᵀ = Q_r T_r`` the singular
values of M are those of the K × K core ``T_l T_rᵀ``, and its singular
vectors are ``Q_l U_c`` and ``Q_r V_c``.  Cost O((d_out + d_in) K²) instead of
O(d_out · d_in · min(d_out, d_in)).  When K ≥ min(d_out, d_in) stacking saves
nothing and the dense matrix is used instead.

Everything runs in float64 on the CPU: the numbers are small, and the result
is then the same whatever device the clients trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPE = torch.float64


@dataclass
class ThinSVD:
    """``M = U diag(S) Vh`` with S descending; U is d_out × k, Vh is k × d_in."""

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor


def stack_factors(lefts: list[torch.Tensor], rights: list[torch.Tensor], coeffs: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``Σ c_j L_j R_j`` into one product ``L R`` (coefficients folded into L)."""
    # One scale per column of the stack: one op for any number of factors, not one per factor (built as
    # a list: repeat_interleave with tensor counts costs twice as much for the ~50 columns of a round).
    scale = torch.tensor([c for c, l in zip(coeffs, lefts) for _ in range(l.shape[1])], dtype=DTYPE)
    return torch.cat(lefts, dim=1).to(DTYPE) * scale, torch.cat(rights, dim=0).to(DTYPE)


def svd_of_product(left: torch.Tensor, right: torch.Tensor, dense: bool | None = None, keep: int | None = None) -> ThinSVD:
    """Thin SVD of ``left @ right`` from the factors (dense only when that is cheaper).

    Parameters
    ----------
    left, right
        d_out × K and K × d_in.
    dense
        Force (True) or forbid (False) the dense path; None chooses by shape.
    keep
        Form only the first ``keep`` singular vectors (all singular values are
        always returned): the d-sized products are the costly part.
    """
    d_out, k = left.shape
    d_in = right.shape[1]
    if dense is None:
        dense = k >= min(d_out, d_in)
    if dense:
        u, s, vh = torch.linalg.svd(left.to(DTYPE) @ right.to(DTYPE), full_matrices=False)
        return ThinSVD(u, s, vh)
    h_l, tau_l, t_l = _householder_qr(left.to(DTYPE))  # d_out × K Householder form, K × K R
    h_r, tau_r, t_r = _householder_qr(right.to(DTYPE).T)
    u_c, s, vh_c = torch.linalg.svd(t_l @ t_r.T)
    k = s.numel() if keep is None else min(keep, s.numel())
    return ThinSVD(_apply_q(h_l, tau_l, u_c[:, :k]), s, _apply_q(h_r, tau_r, vh_c[:k].T).T)


def _householder_qr(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QR of a tall ``x`` (n × K) without forming Q: LAPACK's Householder form, its tau, and R (K × K).

    Forming Q explicitly costs as much as the factorization itself; every
    caller here needs only R, or Q times a few columns (:func:`_apply_q`).
    """
    h, tau = torch.geqrf(x)
    return h, tau, h[: x.shape[1]].triu()


def _apply_q(h: torch.Tensor, tau: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``Q @ c`` for the Q of :func:`_householder_qr` (n × K) and a K × k ``c``: n × k."""
    padded = c.new_zeros(h.shape[0], c.shape[1])
    padded[: c.shape[0]] = c
    return torch.ormqr(h, tau, padded)


def gap_to_ideal(
    client_b: list[torch.Tensor],
    client_a: list[torch.Tensor],
    weights: list[float],
    b: torch.Tensor,
    a: torch.Tensor,
    dense: bool | None = None,
) -> tuple[float, float]:
    """(‖Σ wᵢ Bᵢ Aᵢ − B A‖_F, ‖Σ wᵢ Bᵢ Aᵢ‖_F): how far an aggregated adapter is from the ideal update, and the ideal's norm.

    One thin QR of each stack serves both: with ``L = Q_l T_l`` and
    ``Rᵀ = Q_r T_r`` over the stacks ``[w₁B₁ … w_nB_n, −B]`` and
    ``[A₁; …; A_n; A]``, the first K columns of ``T_l`` and ``T_r`` stand for
    the clients' part alone, and orthonormal ``Q`` keep Frobenius norms.

    Where the dense d_out × d_in difference holds at most twice as many
    numbers as the two stacks (small layers, or many clients), it is formed
    instead: one matrix product then costs less than two QRs (measured
    crossover 2.2-2.9× on 2 CPU cores for d = 64…768, r = 4…16, 10 clients),
    and memory stays within a constant factor of the stacks'.  ``dense``
    forces (True) or forbids (False) that path.
    """
    left, right = stack_factors(client_b + [b], client_a + [a], list(weights) + [-1.0])
    k = sum(x.shape[1] for x in client_b)
    if dense is None:
        dense = left.shape[0] * right.shape[1] <= 2 * (left.numel() + right.numel())
    if dense:
        ideal = left[:, :k] @ right[:k]
        gap = torch.addmm(ideal, left[:, k:], right[k:])  # the −1 of B is folded into the left stack
        return float(torch.linalg.matrix_norm(gap)), float(torch.linalg.matrix_norm(ideal))
    t_l = _householder_qr(left)[2]
    t_r = _householder_qr(right.T)[2]
    return float(torch.linalg.matrix_norm(t_l @ t_r.T)), float(torch.linalg.matrix_norm(t_l[:, :k] @ t_r[:, :k].T))


def split_balanced(svd: ThinSVD, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` factors ``B = U√Σ`` (d_out × rank), ``A = √Σ Vᵀ`` (rank × d_in)."""
    root = svd.S[:rank].sqrt()
    return svd.U[:, :rank] * root, root[:, None] * svd.Vh[:rank]


def tail_energy(s: torch.Tensor, rank: int) -> tuple[float, float]:
    """(Σ_{i>rank} σᵢ², Σ σᵢ²): energy left out by a rank-``rank`` truncation, and the total."""
    sq = s.to(DTYPE) ** 2
    return float(sq[rank:].sum()), float(sq.sum())

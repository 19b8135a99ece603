"""Aggregator math on small hand-computed tensors (Prepare / Execute / Assert)."""

from __future__ import annotations

import math

import pytest
import torch

from fedspec.fl.aggregators import fedavg, fedspec
from fedspec.fl.aggregators.factored import gap_to_ideal, split_balanced, stack_factors, svd_of_product
from fedspec.fl.lora import LoraPair

PAIR = LoraPair(a="l.lora_A.w", b="l.lora_B.w")


def client(b: list[list[float]], a: list[list[float]], head: list[float]) -> dict[str, torch.Tensor]:
    return {PAIR.a: torch.tensor(a), PAIR.b: torch.tensor(b), "head.w": torch.tensor(head)}


def two_orthogonal_clients() -> list[dict[str, torch.Tensor]]:
    # Client 1 updates e1 e1ᵀ, client 2 updates e2 e2ᵀ; the ideal average is I/2.
    return [client([[1.0], [0.0]], [[1.0, 0.0]], [1.0, 0.0]), client([[0.0], [1.0]], [[0.0, 1.0]], [0.0, 4.0])]


def test_fedavg_averages_factors_and_head_by_sample_weight() -> None:
    states = two_orthogonal_clients()
    out = fedavg(states, [1, 3], [PAIR], rank=1)
    assert torch.allclose(out.state[PAIR.b], torch.tensor([[0.25], [0.75]]))
    assert torch.allclose(out.state[PAIR.a], torch.tensor([[0.25, 0.75]]))
    assert torch.allclose(out.state["head.w"], torch.tensor([0.25, 3.0]))


def test_fedavg_gap_is_the_error_of_product_of_averages() -> None:
    # Equal weights: B̄Ā = 0.25·ones(2,2), ideal = 0.5·I, difference has entries ±0.25.
    out = fedavg(two_orthogonal_clients(), [1, 1], [PAIR], rank=1)
    assert out.gap == pytest.approx(0.5)
    assert out.tail_energy == pytest.approx(0.25 / 0.5)  # gap² / ‖ideal‖² = 0.25 / 0.5


def test_fedavg_of_one_client_has_no_gap() -> None:
    """Centralized runs and rounds with one sampled client: the summary table showed float noise (1.8e-15) as their gap."""
    g = torch.Generator().manual_seed(0)
    state = {PAIR.a: torch.randn(8, 768, generator=g), PAIR.b: torch.randn(768, 8, generator=g), "head.w": torch.randn(3, generator=g)}
    out = fedavg([state], [37], [PAIR], rank=8)
    assert out.gap == 0.0 and out.tail_energy == 0.0
    assert all(torch.equal(out.state[k], v) for k, v in state.items())


def test_fedspec_rank_one_keeps_one_singular_direction() -> None:
    # Ideal I/2 has σ = (0.5, 0.5): rank 1 leaves half the energy out; threshold 1 forbids growth.
    out = fedspec(two_orthogonal_clients(), [1, 1], [PAIR], rank=1, max_rank=1, step=1, threshold=1.0)
    assert out.rank == 1
    assert out.gap == pytest.approx(0.5)
    assert out.tail_energy == pytest.approx(0.5)
    product = out.state[PAIR.b] @ out.state[PAIR.a]
    assert float(torch.linalg.matrix_norm(product)) == pytest.approx(0.5)


def test_fedspec_grows_rank_when_tail_energy_exceeds_threshold() -> None:
    states = [
        {PAIR.a: torch.tensor([[1.0, 0.0], [0.0, 0.0]]), PAIR.b: torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "head.w": torch.zeros(1)},
        {PAIR.a: torch.tensor([[0.0, 1.0], [0.0, 0.0]]), PAIR.b: torch.tensor([[0.0, 0.0], [1.0, 0.0]]), "head.w": torch.zeros(1)},
    ]
    out = fedspec(states, [1, 1], [PAIR], rank=1, max_rank=2, step=1, threshold=0.1)
    assert out.rank == 2
    assert out.extra["tail_before"] == pytest.approx(0.5)
    assert out.gap == pytest.approx(0.0, abs=1e-6)  # rank 2 represents I/2 exactly
    assert torch.allclose(out.state[PAIR.b] @ out.state[PAIR.a], 0.5 * torch.eye(2), atol=1e-6)


def test_fedspec_rank_never_exceeds_max() -> None:
    states = [
        {PAIR.a: torch.tensor([[1.0, 0.0]]), PAIR.b: torch.tensor([[1.0], [0.0]]), "head.w": torch.zeros(1)},
        {PAIR.a: torch.tensor([[0.0, 1.0]]), PAIR.b: torch.tensor([[0.0], [1.0]]), "head.w": torch.zeros(1)},
    ]
    out = fedspec(states, [1, 1], [PAIR], rank=1, max_rank=1, step=4, threshold=0.0)
    assert out.rank == 1


def test_fedspec_rank_never_passes_what_the_widest_layer_holds() -> None:
    """max_rank 200 on digits (layers 64×128 and 128×128) reported FedSpec at rank 184: components no layer can hold."""
    g = torch.Generator().manual_seed(0)
    wide, narrow = LoraPair(a="w.lora_A.x", b="w.lora_B.x"), LoraPair(a="n.lora_A.x", b="n.lora_B.x")

    def adapter(d_out: int, d_in: int) -> tuple[torch.Tensor, torch.Tensor]:  # width 8, active rank 2
        a, b = torch.zeros(8, d_in), torch.zeros(d_out, 8)
        a[:2], b[:, :2] = torch.randn(2, d_in, generator=g), torch.randn(d_out, 2, generator=g)
        return a, b

    states = []
    for _ in range(3):
        (wa, wb), (na, nb) = adapter(4, 3), adapter(2, 5)  # min(d_out, d_in): 3 and 2
        states.append({wide.a: wa, wide.b: wb, narrow.a: na, narrow.b: nb})
    out = fedspec(states, [1, 1, 1], [wide, narrow], rank=2, max_rank=8, step=4, threshold=-1.0,
                  generator=torch.Generator().manual_seed(1))
    assert out.rank == 3
    again = fedspec(states, [1, 1, 1], [wide, narrow], rank=8, max_rank=8, step=4, threshold=-1.0,
                    generator=torch.Generator().manual_seed(1))
    assert again.rank == 3  # a start past it too


def test_fedspec_reinitialises_components_with_zero_singular_value() -> None:
    # Both clients send the same rank-1 update; growing to rank 2 finds σ₂ = 0.
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    states = [{PAIR.a: a, PAIR.b: b, "head.w": torch.zeros(1)}] * 2
    out = fedspec(states, [1, 1], [PAIR], rank=1, max_rank=2, step=1, threshold=-1.0,
                  generator=torch.Generator().manual_seed(0))
    assert out.rank == 2
    assert torch.count_nonzero(out.state[PAIR.a][1]) == 3  # fresh random A row: it can learn
    assert torch.count_nonzero(out.state[PAIR.b][:, 1]) == 0  # B column zero: function unchanged
    assert torch.allclose(out.state[PAIR.b] @ out.state[PAIR.a], b @ a, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_fedspec_gap_never_exceeds_fedavg_gap(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    r, n = 3, 5
    states = [
        {PAIR.a: torch.randn(r, 20, generator=gen), PAIR.b: torch.randn(16, r, generator=gen), "head.w": torch.randn(2, generator=gen)}
        for _ in range(n)
    ]
    weights = [float(w) for w in torch.rand(n, generator=gen) + 0.1]
    avg = fedavg(states, weights, [PAIR], rank=r)
    spec = fedspec(states, weights, [PAIR], rank=r, max_rank=r, step=1, threshold=1.0)
    assert spec.gap <= avg.gap + 1e-9
    assert spec.gap > 0  # n·r > r: the truncation really drops energy


@pytest.mark.parametrize("shape", [(64, 48, 4, 3), (30, 200, 2, 6), (8, 8, 4, 3)])  # the last one takes the dense fallback
def test_factored_svd_matches_dense_svd(shape: tuple[int, int, int, int]) -> None:
    d_out, d_in, r, n = shape
    gen = torch.Generator().manual_seed(1)
    bs = [torch.randn(d_out, r, generator=gen) for _ in range(n)]
    as_ = [torch.randn(r, d_in, generator=gen) for _ in range(n)]
    w = [1.0 / n] * n
    left, right = stack_factors(bs, as_, w)
    fact = svd_of_product(left, right, dense=False if n * r < min(d_out, d_in) else None)
    dense = torch.linalg.svd(sum(wi * (b.double() @ a.double()) for wi, b, a in zip(w, bs, as_)), full_matrices=False)
    k = fact.S.numel()
    assert torch.allclose(fact.S, dense.S[:k], rtol=1e-9, atol=1e-9)
    b_f, a_f = split_balanced(fact, r)
    b_d, a_d = split_balanced(type(fact)(dense.U, dense.S, dense.Vh), r)
    assert torch.allclose(b_f @ a_f, b_d @ a_d, rtol=1e-8, atol=1e-8)
    gap, ideal = gap_to_ideal(bs, as_, w, b_f.float(), a_f.float())
    assert gap == pytest.approx(math.sqrt(float((dense.S[r:] ** 2).sum())), rel=1e-5)
    assert ideal == pytest.approx(float(dense.S.norm()), rel=1e-9)


@pytest.mark.parametrize("spread", [1.0, 1e-6])  # 1e-6: clients almost agree, the gap is ~1e-12 of the ideal
@pytest.mark.parametrize("shape", [(128, 128, 4, 10), (64, 200, 8, 3)])
def test_gap_is_the_same_from_the_dense_product_and_from_qr(shape: tuple[int, int, int, int], spread: float) -> None:
    d_out, d_in, r, n = shape
    gen = torch.Generator().manual_seed(2)
    b0, a0 = torch.randn(d_out, r, generator=gen), torch.randn(r, d_in, generator=gen)
    bs = [b0 + spread * torch.randn(d_out, r, generator=gen) for _ in range(n)]
    as_ = [a0 + spread * torch.randn(r, d_in, generator=gen) for _ in range(n)]
    w = [float(x) for x in torch.softmax(torch.randn(n, generator=gen), 0)]
    b = sum(wi * x.double() for wi, x in zip(w, bs)).float()
    a = sum(wi * x.double() for wi, x in zip(w, as_)).float()
    exact = sum(wi * (x.double() @ y.double()) for wi, x, y in zip(w, bs, as_)) - b.double() @ a.double()
    for dense in (True, False):
        gap, ideal = gap_to_ideal(bs, as_, w, b, a, dense=dense)
        assert gap == pytest.approx(float(exact.norm()), rel=1e-6)
        assert ideal == pytest.approx(float((exact + b.double() @ a.double()).norm()), rel=1e-9)

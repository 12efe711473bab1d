import pytest
import torch

from crt_video.models.memory_cells import MaskedCell, NCGRUCell


def orthogonality_error(cell: NCGRUCell) -> float:
    w = cell.recurrent_matrix
    return (w.T @ w - torch.eye(w.shape[0])).abs().max().item()


def test_ncgru_recurrent_matrix_stays_orthogonal_while_training():
    torch.manual_seed(0)
    cell = NCGRUCell(8, 32)
    optimizer = torch.optim.Adam(cell.parameters(), lr=1e-2)
    recurrent_before = cell.recurrent_matrix.detach().clone()
    for _ in range(25):
        h = torch.randn(16, 32)
        for _ in range(4):
            h = cell(torch.randn(16, 8), h)
        loss = (h - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert orthogonality_error(cell) < 1e-5
    assert not torch.allclose(cell.recurrent_matrix, recurrent_before)  # it did learn


def test_ncgru_scaling_diagonal_is_fixed_plus_minus_one():
    cell = NCGRUCell(4, 10, num_negative=3)
    assert sorted(cell.diagonal.tolist()) == [-1.0] * 3 + [1.0] * 7
    assert "diagonal" not in dict(cell.named_parameters())


def test_ncgru_candidate_is_modrelu_of_the_rotated_state():
    torch.manual_seed(0)
    cell = NCGRUCell(3, 6)
    x, h = torch.randn(2, 3), torch.randn(2, 6)
    x_r, x_z, x_c = cell.input(x).chunk(3, dim=-1)
    h_r, h_z = cell.gates(h).chunk(2, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    v = x_c + r * (h @ cell.recurrent_matrix)
    c = torch.sign(v) * torch.relu(v.abs() + cell.modrelu_bias)
    torch.testing.assert_close(cell(x, h), z * h + (1 - z) * c)


@pytest.mark.parametrize("kind", ["gru", "ncgru"])
def test_masked_cell_keeps_the_state_of_finished_clips_exactly(kind):
    torch.manual_seed(0)
    cell = MaskedCell(kind, 5, 7)
    x, h = torch.randn(3, 5), torch.randn(3, 7)
    update = torch.tensor([True, False, True])
    out = cell(x, h, update)
    assert torch.equal(out[1], h[1])
    torch.testing.assert_close(out[[0, 2]], cell.cell(x[[0, 2]], h[[0, 2]]))


def test_ncgru_matrix_is_solved_once_while_streaming_and_again_after_an_update():
    torch.manual_seed(0)
    cell = NCGRUCell(8, 16)
    with torch.inference_mode():
        first = cell.recurrent_matrix
        assert cell.recurrent_matrix is first  # reused across streaming steps
    with torch.no_grad():
        original = cell.recurrent.parametrizations.weight.original
        original.add_(0.1 * torch.randn_like(original))
        updated = cell.recurrent_matrix
    assert not torch.allclose(updated, first)
    torch.testing.assert_close(updated, cell.recurrent_matrix.detach())  # a fresh solve
    assert cell.recurrent_matrix.requires_grad  # training never sees the cache

"""LightGCN: the normalised adjacency and the propagation of a hand-made 2-user / 3-item graph, parity with
torch_geometric's LightGCN (LGConv) on a random graph, the encoder's user vectors and the decoder's propagated
item vectors, a graph from training interactions only, gradients reaching the ego vectors, and the config wiring
(encoder=lightgcn selects its item embedder; the pairing is checked)."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from recforge.data.datamodule import TrainingData
from recforge.errors import RecforgeError
from recforge.models.decoders import DotProduct
from recforge.models.embedders import IdEmbedding
from recforge.models.encoders.lightgcn import (
    GraphEmbedding,
    LightGCN,
    normalized_adjacency,
)
from recforge.models.encoders.mf import MatrixFactorization
from recforge.models.losses import BPR
from recforge.models.module import NextItemModule
from recforge.models.samplers import UniformNegatives
from recforge.run.build import build
from recforge.run.validate import validate_config

TINY = ["dataset.reader.num_users=150", "dataset.reader.num_items=60", "dataset.reader.max_length=20",
        "dataset.max_len=10", "hidden_size=16", "logger=none", "callbacks=none"]
R2 = math.sqrt(2.0)


def hand_graph() -> TrainingData:
    """User 0 has items 1, 2 (item 1 twice: one edge), user 1 has items 2, 3; 3 items (ids 1..3)."""
    items = torch.tensor([1, 2, 1, 2, 3])
    indptr = torch.tensor([0, 3, 5])
    return TrainingData(torch.bincount(items, minlength=4), indptr, items)


def hand_embedder(num_layers: int) -> GraphEmbedding:
    """Ego vectors of width 1: users 1, 2; items 1, 2, 3 -> 3, 4, 5 (padding and [MASK] 0)."""
    embedder = GraphEmbedding(num_items=3, hidden_size=1, num_users=2, num_layers=num_layers)
    with torch.no_grad():
        embedder.users.weight.copy_(torch.tensor([[1.0], [2.0]]))
        embedder.ids.table.weight.copy_(torch.tensor([[0.0], [3.0], [4.0], [5.0], [0.0]]))
    embedder.fit_data(hand_graph())
    return embedder


def test_normalized_adjacency_of_a_hand_made_graph():
    data = hand_graph()
    adjacency = normalized_adjacency(data.indptr.numpy(), data.items.numpy(), 2, 7).to_dense()  # (7, 7)
    # degrees: user 0: 2, user 1: 2, item 1: 1, item 2: 2, item 3: 1; item i is node 2 + i
    want = torch.zeros(7, 7)
    for user, node, value in [(0, 3, 1 / R2), (0, 4, 0.5), (1, 4, 0.5), (1, 5, 1 / R2)]:
        want[user, node] = want[node, user] = value
    torch.testing.assert_close(adjacency, want)


@pytest.mark.parametrize("num_layers", [0, 1, 2])
def test_propagation_of_a_hand_made_graph(num_layers):
    """Layer 1: u0 = 3/sqrt2 + 4/2, u1 = 4/2 + 5/sqrt2, i1 = 1/sqrt2, i2 = 1/2 + 2/2, i3 = 2/sqrt2.
    Layer 2: u0 = (1/sqrt2)/sqrt2 + 1.5/2 = 1.25, u1 = 1.5/2 + sqrt2/sqrt2 = 1.75, i1 = (2 + 3/sqrt2)/sqrt2,
    i2 = (2 + 3/sqrt2)/2 + (2 + 5/sqrt2)/2, i3 = (2 + 5/sqrt2)/sqrt2. The result is the mean of layers 0..K."""
    layers = [
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [3 / R2 + 2, 2 + 5 / R2, 1 / R2, 1.5, 2 / R2],
        [1.25, 1.75, (2 + 3 / R2) / R2, (2 + 3 / R2) / 2 + (2 + 5 / R2) / 2, (2 + 5 / R2) / R2],
    ]
    want = torch.tensor(layers[: num_layers + 1]).mean(dim=0)  # u0, u1, i1, i2, i3
    embedder = hand_embedder(num_layers)
    torch.testing.assert_close(embedder.user_vectors(torch.tensor([0, 1]))[:, 0], want[:2])
    torch.testing.assert_close(embedder(torch.tensor([1, 2, 3]))[:, 0], want[2:])
    weights = embedder.output_weights()  # (N+1, 1): padding first, zero
    assert weights.shape == (4, 1) and weights[0, 0] == 0
    torch.testing.assert_close(weights[1:, 0], want[2:])


def test_propagation_matches_torch_geometric_lightgcn():
    geometric = pytest.importorskip("torch_geometric.nn.models")
    rng = np.random.default_rng(0)
    num_users, num_items, hidden, layers = 12, 9, 5, 3
    lengths = rng.integers(1, 6, num_users)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, num_items + 1, indptr[-1])  # ids 1..N, repeats allowed
    embedder = GraphEmbedding(num_items, hidden, num_users, num_layers=layers, init_std=1.0)
    embedder.fit_data(TrainingData(torch.from_numpy(np.bincount(items, minlength=num_items + 1)),
                                   torch.from_numpy(indptr), torch.from_numpy(items)))
    ours = embedder.propagated().detach()  # (U + N + 2, H)

    users = np.repeat(np.arange(num_users), lengths)
    pairs = np.unique(np.stack([users, items + num_users]), axis=1)  # binary graph, item i = node U + i
    edge_index = torch.from_numpy(np.concatenate([pairs, pairs[::-1]], axis=1))  # both directions
    reference = geometric.LightGCN(num_users + num_items + 2, hidden, layers)  # alpha = 1 / (K + 1)
    with torch.no_grad():
        reference.embedding.weight.copy_(torch.cat([embedder.users.weight, embedder.ids.table.weight]))
        torch.testing.assert_close(ours, reference.get_embedding(edge_index))


def module_of(embedder: GraphEmbedding) -> NextItemModule:
    return NextItemModule(encoder=LightGCN(embedder, max_len=3), decoder=DotProduct(embedder),
                          loss=BPR(UniformNegatives(1)), optimizer=partial(torch.optim.Adam, lr=1e-2))


def test_scores_are_propagated_users_dotted_with_propagated_items():
    embedder = hand_embedder(num_layers=1)
    module = module_of(embedder).eval()
    u0, u1 = (1 + 3 / R2 + 2) / 2, (2 + 2 + 5 / R2) / 2
    items = torch.tensor([0.0, (3 + 1 / R2) / 2, (4 + 1.5) / 2, (5 + 2 / R2) / 2])  # padding, i1, i2, i3
    want = torch.stack([u0 * items, u1 * items])  # (2, 4)
    want[:, 0] = float("-inf")
    recent = torch.tensor([[1, 2, 0], [2, 3, 0]])
    torch.testing.assert_close(module.score(recent, torch.tensor([0, 1])), want)
    hidden = module.encoder(recent, users=torch.tensor([1, 0]))  # (2, 3, 1): the user's vector at every position
    torch.testing.assert_close(hidden[:, :, 0], torch.tensor([[u1] * 3, [u0] * 3]))
    torch.testing.assert_close(module.encoder(recent)[0, 0, 0], torch.tensor((u0 + u1) / 2))  # no users: the mean
    module.train()
    with pytest.raises(RecforgeError, match="encoder=lightgcn needs the user of every training window"):
        module.encoder(recent)


def test_a_training_step_reaches_every_ego_vector_through_the_graph():
    """User 0's loss reaches user 1's ego vector only through the graph (item 2 is shared), and cached
    no-gradient propagations are refreshed once a weight changes."""
    embedder = hand_embedder(num_layers=2)
    module = module_of(embedder)
    batch = {"items": torch.tensor([[0, 1, 2, 0]]), "user": torch.tensor([0])}
    torch.manual_seed(0)
    loss = module.training_step(batch, 0)
    loss.backward()
    assert embedder.users.weight.grad[1, 0] != 0 and embedder.ids.table.weight.grad[3, 0] != 0
    with torch.no_grad():
        before = embedder.output_weights().clone()
        assert embedder.propagated() is embedder.propagated()  # reused without gradients
    torch.optim.SGD(embedder.parameters(), lr=0.5).step()
    with torch.no_grad():
        assert not torch.equal(embedder.output_weights(), before)


def test_one_propagation_serves_a_whole_training_step_and_its_backward_releases_it():
    """Within a step every call shares one propagation with gradients (so the ego gradient is the sum over all
    uses, as with separate propagations); after backward, or a weight change, the next call propagates afresh,
    so accumulating two steps' gradients never reaches into a freed graph."""
    embedder = hand_embedder(num_layers=2)
    first = embedder.propagated()
    assert first.requires_grad and embedder.propagated() is first and embedder.user_vectors(torch.tensor([0])).requires_grad
    with torch.no_grad():
        assert embedder.propagated() is not first  # no-gradient calls have their own propagation
    loss = embedder.user_vectors(torch.tensor([0])).sum() + embedder(torch.tensor([3])).sum()  # two uses
    loss.backward()
    shared = embedder.users.weight.grad.clone()
    assert embedder.propagated() is not first  # the backward pass dropped the used propagation
    # the same loss from two separate propagations (the old behaviour) gives the same gradient
    embedder.zero_grad()
    embedder._cached = None
    users = embedder.user_vectors(torch.tensor([0])).sum()
    embedder._cached = None
    (users + embedder(torch.tensor([3])).sum()).backward()
    torch.testing.assert_close(embedder.users.weight.grad, shared)
    # gradient accumulation over two steps without an optimiser step between them
    embedder.zero_grad()
    for _ in range(2):
        embedder.user_vectors(torch.tensor([1])).sum().backward()
    single = torch.autograd.grad(propagate_sum(embedder), embedder.users.weight)[0]
    torch.testing.assert_close(embedder.users.weight.grad, 2 * single)


def propagate_sum(embedder: GraphEmbedding) -> torch.Tensor:
    embedder._cached = None
    return embedder.user_vectors(torch.tensor([1])).sum()


def test_wrong_item_embedder_and_unfitted_graph_are_refused():
    with pytest.raises(RecforgeError, match="encoder=lightgcn needs item_embedder GraphEmbedding, not IdEmbedding"):
        LightGCN(IdEmbedding(3, 4), max_len=3)
    with pytest.raises(RuntimeError, match="before fit_data"):
        GraphEmbedding(3, 4, num_users=2).output_weights()
    with pytest.raises(RecforgeError, match="the training data has 2 users but item_embedder.num_users is 5"):
        GraphEmbedding(3, 4, num_users=5).fit_data(hand_graph())


def test_config_builds_a_graph_of_training_interactions_only(compose_train):
    cfg = compose_train("encoder=lightgcn", "loss=bpr", *TINY)
    validate_config(cfg)
    datamodule, module = build(cfg)
    embedder = module.encoder.item_embedder
    assert isinstance(embedder, GraphEmbedding) and module.decoder.item_embedder is embedder
    assert embedder.num_users == datamodule.num_users == 150 and embedder.num_layers == 3
    module.fit_parts(datamodule)
    data = datamodule.training_data
    users = np.repeat(np.arange(data.num_users), np.diff(data.indptr.numpy()))
    train_edges = {(int(u), int(i) + 150) for u, i in zip(users, data.items.numpy())}
    rows = torch.repeat_interleave(torch.arange(len(embedder.crow) - 1), embedder.crow.diff())  # CSR -> (nnz,)
    graph_edges = {(int(a), int(b)) for a, b in zip(rows.tolist(), embedder.cols.tolist()) if a < 150}
    assert graph_edges == train_edges  # every training pair, and nothing else (no validation or test target)
    held_out = {(int(row["user"]), int(row["target"]) + 150)
                for part in (datamodule.val_set, datamodule.test_set)
                for row in [part.__getitems__(list(range(len(part))))]
                for row in [{"user": u, "target": t} for u, t in zip(row["user"], row["target"])]}
    assert held_out - train_edges and not (held_out - train_edges) & graph_edges


def test_pairing_is_checked(compose_train):
    cfg = compose_train("encoder=lightgcn", *TINY)
    cfg.item_embedder = {"_target_": "recforge.models.embedders.IdEmbedding", "hidden_size": 16}
    with pytest.raises(RecforgeError, match="encoder LightGCN needs item_embedder GraphEmbedding, not IdEmbedding"):
        validate_config(cfg)


def test_zero_layers_is_matrix_factorisation():
    """num_layers=0: the propagated vectors are the ego vectors, so LightGCN scores as encoder=mf with the same
    weights (end to end on ML-100K, the two runs' validation curves were identical, seed 42)."""
    embedder = GraphEmbedding(num_items=3, hidden_size=4, num_users=2, num_layers=0)
    embedder.fit_data(hand_graph())
    mf = MatrixFactorization(IdEmbedding(3, 4), num_users=2, max_len=3)
    with torch.no_grad():
        mf.users.weight.copy_(embedder.users.weight)
        mf.item_embedder.table.weight.copy_(embedder.ids.table.weight)
    ours, theirs = module_of(embedder).eval(), NextItemModule(
        encoder=mf, decoder=DotProduct(mf.item_embedder), loss=BPR(UniformNegatives(1)),
        optimizer=partial(torch.optim.Adam, lr=1e-2)).eval()
    recent, users = torch.tensor([[1, 2, 0], [2, 3, 0]]), torch.tensor([0, 1])
    torch.testing.assert_close(ours.score(recent, users), theirs.score(recent, users))
    window = torch.tensor([[0, 1, 2, 3]])
    assert torch.equal(ours.encoder.training_pairs(window)[1], mf.training_pairs(window)[1])


def test_propagation_under_bf16_autocast_stays_in_fp32_with_the_same_gradient():
    """CPU has no bf16 sparse product: under ``precision=bf16-mixed`` the propagation (forward and backward) runs
    in fp32, so values and ego gradients equal those without autocast."""
    embedder = hand_embedder(num_layers=2)
    users = torch.tensor([0, 1])
    plain = embedder.user_vectors(users)
    plain.sum().backward()
    want = embedder.users.weight.grad.clone()
    embedder.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = embedder.user_vectors(users)
        mixed.sum().backward()
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain.detach(), rtol=0, atol=0)
    torch.testing.assert_close(embedder.users.weight.grad, want, rtol=0, atol=0)

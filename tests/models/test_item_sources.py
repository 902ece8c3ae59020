"""Attribute bags, file vectors and the fusion of several item sources, on hand-computed cases."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from recforge.data.item_attributes import AttributeBags
from recforge.errors import RecforgeError
from recforge.models.embedders import IdEmbedding
from recforge.models.item_sources import (
    AttributeEmbedding,
    ConcatSources,
    GateSources,
    MultiEmbedding,
    SumSources,
    VectorEmbedding,
)
from recforge.run.item_features import attach_item_features

# 3 items: item 1 has attributes 1 and 2, item 2 has attribute 3, item 3 none
BAGS = AttributeBags(torch.tensor([[1, 2], [3, 0], [0, 0]]), ["a", "b", "c"], missing=1)
TABLE = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 6.0], [-1.0, 0.5]])  # (A+1, H): row 0 padding


def attribute_embedder(mean: bool = True) -> AttributeEmbedding:
    embedder = AttributeEmbedding(num_items=3, hidden_size=2, mean=mean)
    embedder.attach_item_attributes(BAGS)
    with torch.no_grad():
        embedder.table.weight.copy_(TABLE)
        embedder.default.copy_(torch.tensor([7.0, 8.0]))
        embedder.mask_vector.copy_(torch.tensor([9.0, 9.0]))
    return embedder


def test_attribute_bag_mean_is_exact():
    embedder = attribute_embedder()
    out = embedder(torch.tensor([[1, 2, 3, 0, 4]]))  # items 1..3, padding, [MASK]
    expected = [[[2.0, 4.0], [-1.0, 0.5], [7.0, 8.0], [0.0, 0.0], [9.0, 9.0]]]  # (1+3)/2, (2+6)/2; default; 0; mask
    assert out.tolist() == expected
    assert embedder.output_weights().tolist() == [[0.0, 0.0], [2.0, 4.0], [-1.0, 0.5], [7.0, 8.0]]


def test_attribute_bag_sum_and_gradient_reach_only_used_rows():
    embedder = attribute_embedder(mean=False)
    out = embedder(torch.tensor([1, 2]))
    assert out.tolist() == [[4.0, 8.0], [-1.0, 0.5]]
    out.sum().backward()
    assert embedder.table.weight.grad.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    assert embedder.default.grad.tolist() == [0.0, 0.0]  # no item without attributes in the batch


def test_attribute_checkpoint_loads_into_an_unattached_embedder():
    trained = attribute_embedder()
    fresh = AttributeEmbedding(num_items=3, hidden_size=2)  # sized by the checkpoint, not by data
    fresh.load_state_dict(trained.state_dict())
    assert fresh.table.weight.shape == (4, 2) and fresh.bags.shape == (5, 2)
    torch.testing.assert_close(fresh.output_weights(), trained.output_weights())


def test_unattached_attribute_embedder_refuses_to_run():
    with pytest.raises(RuntimeError, match="never attached"):
        AttributeEmbedding(num_items=3, hidden_size=2)(torch.tensor([1]))


def vector_embedder(tmp_path: Path) -> VectorEmbedding:
    np.save(tmp_path / "v.npy", np.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]], dtype=np.float32))
    (tmp_path / "v.ids").write_text("b\na\nzz\n")  # zz is no item of the dataset
    embedder = VectorEmbedding(num_items=3, hidden_size=2, path=str(tmp_path / "v.npy"),
                               ids_path=str(tmp_path / "v.ids"))
    embedder.attach_item_ids(["", "a", "b", "c"])  # internal 1 = a, 2 = b, 3 = c (no vector)
    with torch.no_grad():
        embedder.project.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 3.0]]))
        embedder.project.bias.copy_(torch.tensor([0.5, 0.0]))
        embedder.default.copy_(torch.tensor([-1.0, -2.0]))
    return embedder


def test_vector_embedder_maps_raw_ids_and_gives_missing_items_the_default(tmp_path, caplog):
    with caplog.at_level("INFO"):
        embedder = vector_embedder(tmp_path)
    assert "2 of 3 vectors match an item (1 ids match none); 1 of 3 items have no vector" in caplog.text
    # a = (0, 2) -> (0 + 2 + .5, 6); b = (1, 0) -> (1.5, 0); c -> default
    assert embedder(torch.tensor([1, 2, 3, 0])).tolist() == [[2.5, 6.0], [1.5, 0.0], [-1.0, -2.0], [0.0, 0.0]]
    fresh = VectorEmbedding(num_items=3, hidden_size=2, path="/nowhere.npy")  # a checkpoint needs no file
    fresh.load_state_dict(embedder.state_dict())
    torch.testing.assert_close(fresh.output_weights(), embedder.output_weights())


def test_fusions_of_sources_are_exact():
    x1, x2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -4.0]])
    assert SumSources(2, 2)([x1, x2]).tolist() == [[4.0, -2.0]]
    concat = ConcatSources(2, 2)
    with torch.no_grad():
        concat.project.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 2.0, 0.0]]))
        concat.project.bias.copy_(torch.tensor([0.0, 1.0]))
    assert concat([x1, x2]).tolist() == [[1.0 - 4.0, 6.0 + 1.0]]
    gate = GateSources(2, 2)
    with torch.no_grad():
        gate.gate.weight.zero_()
        gate.gate.bias.copy_(torch.tensor([0.0, 0.0, float(np.log(3.0)), 0.0]))  # source 2, dim 0: weight 3/4
    # dim 0: 1/4 * 1 + 3/4 * 3 = 2.5; dim 1: equal weights: (2 - 4) / 2 = -1
    torch.testing.assert_close(gate([x1, x2]), torch.tensor([[2.5, -1.0]]))


def test_multi_embedding_sums_id_and_attribute_vectors():
    multi = MultiEmbedding(3, 2, sources={"id": functools.partial(IdEmbedding, hidden_size=2),
                                          "attributes": functools.partial(AttributeEmbedding, hidden_size=2)})
    attach_item_features(multi, FakeData(), column="genres")  # through the role, as build() does
    with torch.no_grad():
        multi.sources["attributes"].table.weight.copy_(TABLE)
        multi.sources["id"].table.weight.copy_(torch.arange(10.0).view(5, 2))
    expected = torch.tensor([[0.0, 0.0], [2.0 + 2.0, 3.0 + 4.0], [4.0 - 1.0, 5.0 + 0.5]])
    torch.testing.assert_close(multi(torch.tensor([0, 1, 2])), expected)
    torch.testing.assert_close(multi.output_weights()[:3], expected)
    assert sorted(multi.state_dict()) == ["sources.attributes.bags", "sources.attributes.default",
                                          "sources.attributes.mask_vector", "sources.attributes.table.weight",
                                          "sources.id.table.weight"]


def test_multi_embedding_needs_a_source_of_its_size():
    with pytest.raises(RecforgeError, match="item_embedder=multi has no source"):
        MultiEmbedding(3, 2, sources={})
    with pytest.raises(RecforgeError, match=r"item_source.id.hidden_size=4 differs from item_embedder.hidden_size=2"):
        MultiEmbedding(3, 2, sources={"id": functools.partial(IdEmbedding, hidden_size=4)})


class FakeReader:
    attribute_column = "genres"

    def item_text(self):
        import pandas as pd
        return pd.DataFrame({"item": ["x", "y"], "genres": ["a|b", "c"]})


class FakeSequences:
    item_ids = np.array(["", "x", "y", "z"], dtype=object)


class FakeData:
    name, reader = "fake", FakeReader()

    def load_sequences(self) -> FakeSequences:
        return FakeSequences()


def test_attach_item_features_reads_nothing_without_a_part():
    assert attach_item_features(nn.Linear(2, 2), object()) == 0


def test_attach_item_features_names_a_missing_attribute_column():
    embedder = AttributeEmbedding(num_items=3, hidden_size=2)
    data = FakeData()
    data.reader = type("NoColumn", (), {"item_text": FakeReader.item_text})()
    with pytest.raises(RecforgeError, match=r"^dataset 'fake' names no attribute column; set item_attributes.column"):
        attach_item_features(embedder, data)
    assert attach_item_features(embedder, data, column="genres") == 1  # the override needs no reader column
    assert embedder.bags[1:-1].tolist() == [[1, 2], [3, 0], [0, 0]]  # x: a, b; y: c; z: none


def test_cold_id_rows_come_from_the_attribute_neighbours():
    """multi [id, attributes]: item 3 (cold) shares item 1's attributes, so with k = 1 its id row becomes item 1's."""
    from recforge.models.embedders import text_neighbour_rows

    multi = MultiEmbedding(3, 2, sources={"id": functools.partial(IdEmbedding, hidden_size=2),
                                          "attributes": functools.partial(AttributeEmbedding, hidden_size=2)})
    multi.sources["attributes"].attach_item_attributes(
        AttributeBags(torch.tensor([[1, 2], [3, 0], [1, 2]]), ["a", "b", "c"], missing=0))
    with torch.no_grad():
        multi.sources["attributes"].table.weight.copy_(TABLE)
    ids, content = multi.id_and_content()
    assert ids is multi.sources["id"]
    torch.testing.assert_close(content, torch.tensor([[0.0, 0.0], [2.0, 4.0], [-1.0, 0.5], [2.0, 4.0]]))
    cold = torch.tensor([False, False, False, True])
    rows = text_neighbour_rows(ids.table.weight[:4], content, cold, k=1)  # (1, H)
    torch.testing.assert_close(rows, ids.table.weight[1:2])
    only_id = MultiEmbedding(3, 2, sources={"id": functools.partial(IdEmbedding, hidden_size=2)})
    assert only_id.id_and_content() is None  # no content to find neighbours by

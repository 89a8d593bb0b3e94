"""The training loop on examples loaded a chunk at a time."""

import torch

from dynlearn.training import ChunkedData, train


def _data(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return {"x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1, "index": torch.arange(n)}


def _loss(module, batch):
    return ((module(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


def _module():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def test_one_chunk_trains_like_the_data_in_memory():
    data = _data()
    settings = dict(max_epochs=5, batch_size=8, patience=None, learning_rate=1e-2)
    memory, chunked = _module(), _module()
    train(memory, _loss, data, generator=torch.Generator().manual_seed(1), **settings)
    loads = []
    chunks = ChunkedData(lambda k: loads.append(k) or data, 1, order=torch.Generator().manual_seed(2))
    train(chunked, _loss, chunks, generator=torch.Generator().manual_seed(1), **settings)
    for a, b in zip(memory.parameters(), chunked.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loads == [0]  # a single chunk is loaded once and kept


def test_every_example_once_per_epoch_and_minibatches_within_a_chunk():
    data = _data()
    parts = [{k: v[i * 10:(i + 1) * 10] for k, v in data.items()} for i in range(4)]
    seen = []

    def loss(module, batch):
        seen.append(batch["index"].tolist())
        return _loss(module, batch)

    chunks = ChunkedData(lambda k: parts[k], 4, order=torch.Generator().manual_seed(0))
    train(_module(), loss, chunks, max_epochs=2, batch_size=4, patience=None, generator=torch.Generator().manual_seed(0))
    flat = [i for batch in seen for i in batch]
    assert sorted(flat) == sorted(list(range(40)) * 2)
    assert all(len({i // 10 for i in batch}) == 1 for batch in seen)  # no minibatch mixes two chunks
    order = torch.Generator().manual_seed(0)
    expected = torch.randperm(4, generator=order).tolist() + torch.randperm(4, generator=order).tolist()
    visited = [batch[0] // 10 for batch in seen]
    assert [c for i, c in enumerate(visited) if i == 0 or c != visited[i - 1]] == expected  # the seeded chunk order

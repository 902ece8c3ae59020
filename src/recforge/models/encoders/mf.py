"""Matrix factorisation (Koren et al. 2009; trained with BPR as in Rendle et al. 2009, RecBole's ``BPR`` model):
a learned vector per user, scored against the item vectors by the dot-product decoder (the shared item table).

The encoder ignores item order: at every position of a training window it returns the window's user vector, and
every training item of the window is a target, so ``loss=bpr`` (sampled negatives), ``loss=ce`` (full softmax)
and ``loss=bce`` all train the same ``<p_user, q_item>`` model. Evaluation scores the user's vector; only the
users of the training data have one.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recforge.errors import RecforgeError
from recforge.models.embedders import ItemEmbedder
from recforge.models.encoders.base import SequenceEncoder
from recforge.rules import check_arguments, int_at_least, number_at_least, rule_table


class MatrixFactorization(SequenceEncoder):
    """User vectors (U, H), H = the item embedder's hidden size. ``forward(items, users)`` -> (B, T, H).

    ``num_users`` is filled in from the data (user rows 0 .. U-1); ``max_len`` is the data's window length, used
    to recognise full training windows (whose first item is the previous window's last target).
    """

    uses_users = True
    next_item_states = False  # every position holds the user's vector; targets are not the shift
    state_per_window = True
    # recforge.rules: checked in the config and here
    argument_rules = rule_table(max_len=int_at_least(2), init_std=number_at_least(0))

    def __init__(self, item_embedder: ItemEmbedder, num_users: int, max_len: int, init_std: float = 0.02) -> None:
        super().__init__()
        if num_users is None or num_users < 0:
            raise ValueError(f"num_users={num_users} must be the number of users of the data (filled in by build_module)")
        check_arguments(MatrixFactorization, "encoder", max_len=max_len, init_std=init_std)
        self.item_embedder, self.max_len = item_embedder, max_len  # the item table is the decoder's
        self.users = nn.Embedding(num_users, item_embedder.hidden_size)
        nn.init.normal_(self.users.weight, std=init_std)

    def training_pairs(self, window: Tensor) -> tuple[Tensor, Tensor]:
        """window: (B, W <= L+1) -> inputs (B, W) (only their shape is used), targets (B, W): every item of the
        window, except the first item of a full window (L+1 items), which the previous window already targets.

        So each training item is a target once per epoch, as in RecBole's BPR, except a user's first item when
        the user's training transitions are a multiple of max_len (their earliest window is full)."""
        full = (window > 0).sum(dim=1) == self.max_len + 1  # (B,)
        targets = window.clone()  # (B, W)
        targets[:, 0] = torch.where(full, 0, window[:, 0])
        return window, targets

    def forward(self, items: Tensor, users: Tensor | None = None) -> Tensor:
        """items: (B, T) (shape only), users: (B,) user rows -> (B, T, H), the user's vector at every position.

        ``users=None`` (a caller that knows only an item history) gives the mean user vector in evaluation and
        is refused in training."""
        B, T = items.shape
        if users is not None:
            vectors = self.users(users)  # (B, H)
        elif self.training:
            raise RecforgeError("encoder=mf needs the user of every training window (batch key 'user'), "
                                "which recforge's SequenceDataModule provides.")
        else:
            vectors = self.users.weight.mean(dim=0).expand(B, -1)  # (B, H)
        return vectors.unsqueeze(1).expand(B, T, -1)  # (B, T, H)

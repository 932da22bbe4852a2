"""One forward pass of rows after a cache: what the scorers and the greedy decoder share.

Rows are right-padded; a cache may hold padding (gaps) inside a row, marked 0 in its mask. Each token's
position is the number of real tokens before it, and sliding windows are drawn from those positions, so
gaps never count as distance: a row's numbers are those of its tokens run alone, up to float rounding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from transformers import Cache, DynamicCache
from transformers.cache_utils import DynamicLayer

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.engine.hf.backend import HFBackend

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape (batch, heads, length, dim)


def encode_prefix(lm: HFBackend, ids: tuple[int, ...]) -> SharedPrefix | None:
    """Keys and values of the soft prompt (prompt tuning), if any, followed by `ids`."""
    input_ids = torch.tensor([ids], dtype=torch.long, device=lm.device)
    # A cache without the model's config keeps every layer's keys whole: one built from a config with sliding-window
    # layers (Gemma 3, Mistral) would keep only each window's last positions, and the prefix is read by queries
    # that end at different places. The windows themselves are applied by the masks (_attention_mask).
    if lm.soft_prompt is None:
        if not ids:
            return None
        output = lm.model(input_ids=input_ids, cache=DynamicCache(), use_cache=True, logits_to_keep=1)
    else:
        embeddings = torch.cat([lm.soft_prompt[None], lm.model.get_input_embeddings()(input_ids)], dim=1)
        output = lm.model(inputs_embeds=embeddings, cache=DynamicCache(), use_cache=True, logits_to_keep=1)
    return SharedPrefix([(layer.keys, layer.values) for layer in output.cache.layers])


class SharedPrefix:
    """A group's prefix keys and values, copied once into per-layer buffers with room for a batch of queries.

    A plain DynamicCache would copy the prefix for every row of every batch, twice (building the cache,
    then concatenating the queries' keys); here each batch writes only its queries' keys and values
    after the prefix and attends to views of the buffers.
    """

    def __init__(self, layers: KeyValues) -> None:
        self.layers = layers  # per layer: batch-1 keys, values
        self.length = layers[0][0].shape[2]
        self.buffers: KeyValues = []

    def cache(self, rows: int, width: int) -> Cache:
        """A cache holding the prefix for `rows` rows, with room for `width` more positions."""
        if not self.buffers or self.buffers[0][0].shape[0] < rows or self.buffers[0][0].shape[2] < self.length + width:
            self.buffers = []
            for keys, values in self.layers:
                buffer_keys = keys.new_empty((rows, keys.shape[1], self.length + width, keys.shape[3]))
                buffer_values = values.new_empty((rows, values.shape[1], self.length + width, values.shape[3]))
                buffer_keys[:, :, : self.length] = keys
                buffer_values[:, :, : self.length] = values
                self.buffers.append((buffer_keys, buffer_values))
        return buffer_cache([(keys[:rows], values[:rows]) for keys, values in self.buffers], self.length)


def buffer_cache(buffers: KeyValues, length: int) -> Cache:
    """A cache over per-layer buffers whose first `length` positions are filled: a forward pass writes its keys
    and values into the buffers after them (no copy of what is there) and attends to views."""
    return Cache(layers=[_BufferLayer(keys, values, length) for keys, values in buffers])


class _BufferLayer(DynamicLayer):
    """A cache layer over preallocated buffers whose first `length` positions are filled."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.buffer_keys, self.buffer_values = keys, values
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]
        self.device = keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start, end = self.keys.shape[2], self.keys.shape[2] + key_states.shape[2]
        self.buffer_keys[:, :, start:end] = key_states
        self.buffer_values[:, :, start:end] = value_states
        self.keys, self.values = self.buffer_keys[:, :, :end], self.buffer_values[:, :, :end]
        return self.keys, self.values


def forward_rows(
    lm: HFBackend,
    cache: Cache | None,
    inputs: Sequence[tuple[int, ...]],
    first_kept: Sequence[int],
    span: int,
    cache_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, KeyValues]:
    """Run right-padded `inputs` after `cache` (one row per input).

    Returns the attention mask over cache + inputs, the logits at positions first_kept[r] ..
    first_kept[r] + span - 1 of each row (clamped to the row's length), and the keys and values of
    cache + inputs for a further level. Padding, in the inputs or inside `cache` (marked 0 in
    cache_mask), is masked and skipped by the position ids.
    """
    batch, width = len(inputs), max(map(len, inputs))
    cached = 0 if cache is None else cache.get_seq_length()
    if cache_mask is None:
        cache_mask = torch.ones((batch, cached), dtype=torch.long)
    input_ids = torch.full((batch, width), lm.pad_token_id, dtype=torch.long)
    input_mask = torch.zeros((batch, width), dtype=torch.long)
    keep = torch.zeros((batch, span), dtype=torch.long)
    for row, ids in enumerate(inputs):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        input_mask[row, : len(ids)] = 1
        keep[row] = (first_kept[row] + torch.arange(span)).clamp(max=len(ids) - 1)
    attention_mask = torch.cat([cache_mask, input_mask], dim=1)
    position_ids = cache_mask.sum(dim=1, keepdim=True) + torch.arange(width)  # real tokens before each one
    output = lm.model(
        input_ids=input_ids.to(lm.device),
        attention_mask=_attention_mask(lm, attention_mask, cache_mask, input_mask, position_ids),
        position_ids=position_ids.to(lm.device),
        cache=DynamicCache() if cache is None else cache,  # whole keys on every layer (see encode_prefix)
        use_cache=True,
        logits_to_keep=keep.to(lm.device),
    )
    return attention_mask, output.logits, [(layer.keys, layer.values) for layer in output.cache.layers]


def _attention_mask(
    lm: HFBackend, padding: torch.Tensor, cache_mask: torch.Tensor, input_mask: torch.Tensor,
    position_ids: torch.Tensor,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """`padding` (the mask over cache + inputs) as it is; for a model with sliding-window layers, 4D masks.

    transformers measures a sliding window in cache slots, and a cache here may hold padding between a row's
    query and its continuations (the scorer's level 3) or between a decoded row's tokens: counted as distance, it would hide keys a full recompute sees. So
    the windows are drawn here from the real positions (True: attend), one mask per layer type when the
    model names them (Gemma 3), else one for all layers (Mistral).
    """
    if lm.sliding_window is None:
        return padding.to(lm.device)
    cached, width = cache_mask.shape[1], input_mask.shape[1]
    in_order = torch.arange(cached + width)[None, :] <= (cached + torch.arange(width))[:, None]  # (query, key) slots
    attend = padding.bool()[:, None, :] & in_order[None]
    key_positions = torch.cat([cache_mask.cumsum(dim=1) - 1, position_ids], dim=1)
    near = position_ids[:, :, None] - key_positions[:, None, :] < lm.sliding_window
    # A padding query's output is never read, but a row that attends to nothing would turn into NaN and
    # reach the next layer through its keys and values; it keeps its full view.
    windowed = attend & (near | ~input_mask.bool()[:, :, None])
    masks = {"full_attention": attend[:, None].to(lm.device), "sliding_attention": windowed[:, None].to(lm.device)}
    other = sorted(set(lm.layer_types) - set(masks))
    if other:  # chunked or linear attention: no mask here says what a full recompute sees
        raise HarnessError(f"model '{lm.name}' has {other[0]} layers; exact scoring supports full and sliding-window "
                           "attention")
    return masks if lm.layer_types else masks["sliding_attention"]

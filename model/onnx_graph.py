"""The ONNX graph of a SentimentLSTM (model/network.py), derived from a loaded module's weights.

The artifact of record stays the TorchScript file; this rebuilds the same computation from its
parameters when the service loads it (model/backends.py checks the two agree), so every artifact,
old ones included, can run on ONNX Runtime without a new export.

    ids int64[B, T], lengths int64[B]  ->  logits float[B, C], probabilities float[B, C]

Exact for mixed lengths, as the packed TorchScript path is: the ONNX LSTM takes each text's length
(`sequence_lens`), so the forward direction stops at a text's last token, the backward direction
starts there, and padding steps never reach a real one. Pooling (max, mean, last) and the n-gram bag
look at real steps only, as in SentimentLSTM.forward; the probabilities are softmax(logits /
temperature), as Artifact.probabilities computes them.
"""

from __future__ import annotations

import numpy as np
import torch

from model import onnx_proto as P

OPSET = 17
BIGRAM_PRIME = 1_000_003  # model/network.py's ngram_logits hash
_END = np.iinfo(np.int64).max  # Slice to the end


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()  # float16 tables widen exactly


class _Graph:
    """Nodes and initializers, one op per call; every value is named by the call that makes it."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.inits: list[bytes] = []
        self._n = 0

    def const(self, value: np.ndarray | list[int] | int | float, name: str | None = None) -> str:
        if not isinstance(value, np.ndarray):
            value = np.array(value, dtype=np.float32 if isinstance(value, float) else np.int64)
        if name is None:
            self._n += 1
            name = f"c{self._n}"
        self.inits.append(P.tensor(name, value))
        return name

    def __call__(self, op: str, *inputs: str, out: str | None = None, n_out: int = 1, **attrs: P.Attr) -> str:
        if out is None:
            self._n += 1
            out = f"{op.lower()}{self._n}"
        outputs = [out] + [f"{out}_{k}" for k in range(1, n_out)]
        self.nodes.append(P.node(op, inputs, outputs, **attrs))
        return out


def _lstm_weights(state: dict[str, torch.Tensor], layer: int, directions: int) -> list[np.ndarray]:
    """W [D, 4H, I], R [D, 4H, H], B [D, 8H] in ONNX's gate order (input, output, forget, cell) from
    PyTorch's (input, forget, cell, output)."""

    def reorder(w: torch.Tensor) -> np.ndarray:
        i, f, g, o = np.split(_np(w), 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    ws, rs, bs = [], [], []
    for d in range(directions):
        suffix = f"_l{layer}" + ("_reverse" if d == 1 else "")
        ws.append(reorder(state[f"lstm.weight_ih{suffix}"]))
        rs.append(reorder(state[f"lstm.weight_hh{suffix}"]))
        bias_ih, bias_hh = state[f"lstm.bias_ih{suffix}"], state[f"lstm.bias_hh{suffix}"]
        bs.append(np.concatenate([reorder(bias_ih), reorder(bias_hh)]))
    return [np.stack(ws), np.stack(rs), np.stack(bs)]


def build(module: torch.nn.Module, temperature: float) -> bytes:
    """A serialised ONNX model computing `module(ids, lengths)` and its calibrated probabilities.

    `module` is a SentimentLSTM, eager or TorchScript (only its parameters and a few attributes are
    read)."""
    state = dict(module.state_dict())
    lstm = module.lstm
    hidden, layers = int(lstm.hidden_size), int(lstm.num_layers)
    directions = 2 if bool(lstm.bidirectional) else 1
    g = _Graph()

    # Time-major from the start: transposing the ids is cheaper than transposing the embeddings.
    x = g("Gather", g.const(_np(state["embedding.weight"])), g("Transpose", "ids", perm=[1, 0]))  # [T, B, E]
    seq_lens = g("Cast", "lengths", to=P.INT32)
    y = y_h = ""
    for layer in range(layers):
        if layer > 0:  # Y [T, D, B, H] -> [T, B, D * H], the next layer's input
            x = g("Reshape", g("Transpose", y, perm=[0, 2, 1, 3]), g.const([0, 0, -1]))
        w, r, b = (g.const(a) for a in _lstm_weights(state, layer, directions))
        y = g("LSTM", x, w, r, b, seq_lens, n_out=2, hidden_size=hidden,
              direction="bidirectional" if directions == 2 else "forward")  # fmt: skip
        y_h = f"{y}_1"  # [D, B, H]: each direction's state at its last step within the text's length

    def side_by_side(t: str) -> str:
        """[K, B, H] -> [B, K * H]: per text, the K directions (or pooled directions) concatenated,
        as SentimentLSTM concatenates them."""
        return g("Reshape", g("Transpose", t, perm=[1, 0, 2]), g.const([0, -1]))

    steps = g("Range", g.const(0), g("Gather", g("Shape", "ids"), g.const(1)), g.const(1))  # [T]
    pooling = str(module.pooling)
    if pooling == "last":  # forward state at the last real token, backward state at the first
        pooled = side_by_side(y_h)
    else:
        # Pooling reads the last layer's Y [T, D, B, H] as it is: reducing over T first leaves a small
        # transpose instead of a large one. mask [T, 1, B, 1]: real steps.
        valid = g("Less", g("Unsqueeze", steps, g.const([1])), g("Unsqueeze", "lengths", g.const([0])))
        mask = g("Unsqueeze", valid, g.const([1, 3]))
        lengths_f = g("Reshape", g("Cast", "lengths", to=P.FLOAT), g.const([1, -1, 1]))  # [1, B, 1]
        # No mask for the sum: onnxruntime's LSTM writes 0 at the steps past a text's length (its
        # behaviour, not the ONNX spec: backends.check_parity's mixed-length probe would catch a change).
        parts = []
        if pooling in ("max", "max_mean"):
            parts.append(g("ReduceMax", g("Where", mask, y, g.const(-np.inf)), axes=[0], keepdims=0))
        if pooling in ("mean", "max_mean"):
            parts.append(g("Div", g("ReduceSum", y, g.const([0]), keepdims=0), lengths_f))
        pooled = side_by_side(parts[0] if len(parts) == 1 else g("Concat", *parts, axis=0))
    classifier = g.const(_np(state["classifier.weight"])), g.const(_np(state["classifier.bias"]))
    logits = g("Gemm", pooled, *classifier, transB=1)
    if int(module.ngram_buckets) > 0:
        logits = g("Add", logits, _ngram_logits(g, state, module, steps))
    g("Identity", logits, out="logits")
    g("Softmax", g("Div", "logits", g.const(float(temperature))), out="probabilities", axis=-1)

    classes = int(state["classifier.bias"].shape[0])
    return P.model(
        g.nodes,
        g.inits,
        [P.value_info("ids", P.INT64, ["batch", "time"]), P.value_info("lengths", P.INT64, ["batch"])],
        [P.value_info(name, P.FLOAT, ["batch", classes]) for name in ("logits", "probabilities")],
        name="sentiment_lstm",
        opset=OPSET,
    )


def _ngram_logits(g: _Graph, state: dict[str, torch.Tensor], module: torch.nn.Module, steps: str) -> str:
    """SentimentLSTM.ngram_logits times its weight: the mean of the bag's rows for a text's words and
    hashed bigrams (row 0 is padding: left out of the sum and the count), through its linear head."""
    table = state["ngrams.weight"]
    rows = _np(table)
    rows[0] = 0.0  # padding_idx 0: its row never counts, whatever it holds
    valid = g("Less", g("Unsqueeze", steps, g.const([0])), g("Unsqueeze", "lengths", g.const([1])))  # [B, T]
    zero = g.const(0)
    words = g("Where", valid, "ids", zero)
    first = g("Slice", "ids", g.const([0]), g.const([-1]), g.const([1]))
    second = g("Slice", "ids", g.const([1]), g.const([_END]), g.const([1]))
    pair = g("Add", g("Mul", first, g.const(BIGRAM_PRIME)), second)
    hashed = g("Mod", pair, g.const(int(module.ngram_buckets)))
    bigrams = g("Add", hashed, g.const(int(module.vocab_size)))
    valid_bigram = g("Slice", valid, g.const([1]), g.const([_END]), g.const([1]))
    feats = g("Concat", words, g("Where", valid_bigram, bigrams, zero), axis=1)  # [B, 2T - 1]

    total = g("ReduceSum", g("Gather", g.const(rows), feats), g.const([1]), keepdims=0)
    count = g("ReduceSum", g("Cast", g("Greater", feats, zero), to=P.FLOAT), g.const([1]), keepdims=1)
    half = table.dtype == torch.float16

    def rounded(t: str) -> str:  # through float16 and back: what a float16 result holds
        return g("Cast", g("Cast", t, to=P.FLOAT16), to=P.FLOAT)

    # EmbeddingBag on a float16 table sums in float32 into a float16 output, then divides that in
    # place by the count (float16 again); the network widens the result. Both roundings are kept, or
    # the bag's logits would differ by up to ~2e-4.
    if half:
        total = rounded(total)
    mean = g("Div", total, g("Max", count, g.const(1.0)))
    if half:
        mean = rounded(mean)
    head_weights = g.const(_np(state["ngram_head.weight"])), g.const(_np(state["ngram_head.bias"]))
    head = g("Gemm", mean, *head_weights, transB=1)
    return g("Mul", head, g.const(_np(state["ngram_weight"]).reshape(())))
